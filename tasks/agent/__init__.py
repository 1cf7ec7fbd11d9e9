"""The agent's loop played by a model in the sandbox (``collect``), written as AGIR v4 runs."""
