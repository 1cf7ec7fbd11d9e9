"""A tiny causal LM made locally: a byte-level BPE tokenizer and a random Llama, both saved
with ``save_pretrained`` and loaded through the same code paths as a real model.

Nothing is downloaded. Tests, the demo and the CPU benchmarks use it; its samples are
random text, which is all garbling and a few DPO steps need.

    python -m agir_retrain.tasks.synth.tiny_model /tmp/tiny-model
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

from agir_retrain.tasks.synth import text

# `builtin:tiny` names this model in settings; it is made on first use under the cache dir.
BUILTIN_TINY = "builtin:tiny"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
VOCAB_SIZE = 1024
MAX_POSITIONS = 2048


def _training_texts(seed: int = 0, count: int = 400) -> list[str]:
    """Texts shaped like run content: prompts, listings, strategies and code."""
    rng = random.Random(seed)
    texts = [text.SYSTEM_PROMPT, text.STRATS_REQUEST, text.CODE_REQUEST, text.CODE_REGEN]
    for _ in range(count):
        texts += [
            text.strategy(rng),
            text.fenced(text.code(rng)),
            text.listing(rng, 400),
            text.basic_env_block(rng),
        ]
    return texts


def make_tiny_model(
    folder: str | Path, *, seed: int = 0, hidden_size: int = 64, layers: int = 2
) -> Path:
    """Train a tokenizer and initialise a tiny Llama, and save both to ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_texts(seed), trainer=trainer)
    # Constructor arguments, not attributes set later: only those are saved.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<pad>",
        eos_token="<|end|>",
        additional_special_tokens=SPECIAL_TOKENS[2:],
        padding_side="left",
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def default_cache_dir() -> Path:
    """Where ``builtin:tiny`` lives: ``$AGIR_CACHE_DIR`` or ``~/.cache/agir-retrain``."""
    return Path(os.environ.get("AGIR_CACHE_DIR", Path.home() / ".cache" / "agir-retrain"))


def resolve_model(name: str) -> str:
    """Turn ``builtin:tiny`` into a local folder (made once); other names pass through."""
    if name != BUILTIN_TINY:
        return name
    folder = default_cache_dir() / "tiny-model"
    if not (folder / "config.json").exists():
        staging = folder.with_name(f".tiny-model.{os.getpid()}")
        make_tiny_model(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process made it first; theirs is as good
            pass
    return str(folder)


if __name__ == "__main__":
    print(make_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))  # noqa: T201
