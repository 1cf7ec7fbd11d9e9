"""Models: resolving a base model, loading it, and the seeded sampler that garbling, evaluation
and collecting share."""
