"""Models: resolving a base model, loading it, and the seeded sampler that garbling, evaluation
and collecting share.

- ``resolve.resolve_model(name) -> str``: ``builtin:tiny``, ``builtin:smollm2-135m``, a
  ``.gguf`` file (converted once into ``$AGIR_CACHE_DIR/models/gguf-<sha256[:16]>/`` by
  ``gguf.converted_folder``), a folder or a hub id, to a folder or hub id;
- ``loading.load_model(name, *, gpus, cpus, load_in_4bit, dtype)``: (model, tokenizer,
  device) for sampling, in the ``dtype`` setting's dtype (``sampling_dtype``);
- ``sampler.Sampler``: ``Sampler.load(...)`` then ``sample(prompts, seeds, max_new_tokens,
  temperature, on_done=None) -> list[Sampled]``, each row on its own seed, prompts shared
  by several rows prefilled once, finished rows leaving the batch.

docs/models.md tells the whole story.
"""
