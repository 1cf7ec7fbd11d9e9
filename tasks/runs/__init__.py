"""Reading run files (one module per format), scoring, pairing, the ingest report, shards, ingest."""
