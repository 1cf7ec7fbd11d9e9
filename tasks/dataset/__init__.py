"""Building the training dataset: shard builds, garbling and its cache, export."""
