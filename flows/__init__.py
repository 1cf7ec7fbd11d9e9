"""Prefect flows of agir-retrain and the command line; they orchestrate ``tasks``."""
