"""The synthetic corpus, its texts, and the tiny local model used by tests and the demo."""
