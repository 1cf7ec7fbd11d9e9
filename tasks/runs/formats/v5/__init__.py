"""The v5 run format (one attempt record per file); ``format.V5Format`` is its entry point."""
