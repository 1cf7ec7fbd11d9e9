"""The v4 and 2024-12 run formats (one run per copy agent); ``format.py`` holds both."""
