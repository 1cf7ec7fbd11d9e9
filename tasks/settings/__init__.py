"""Settings: one pydantic model per command (``models``) and their loader (``loader``)."""
