"""Generations of retraining: collect -> dataset -> train -> evaluate, repeated (``improve``)."""
