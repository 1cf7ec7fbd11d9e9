"""Reading run files (one package per format, ``formats/``), scoring, pairing, the report, ingest."""
