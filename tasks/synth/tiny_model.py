"""A tiny causal LM made locally: a byte-level BPE tokenizer and a random Llama (or Qwen2 or
Mistral, under one of several chat templates), both saved
with ``save_pretrained`` and loaded through the same code paths as a real model.

Nothing is downloaded. Tests, the demo and the CPU benchmarks use it; its samples are
random text, which is all garbling and a few DPO steps need.

    python -m agir_retrain.tasks.synth.tiny_model /tmp/tiny-model
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from agir_retrain.tasks.synth import text

# `builtin:tiny` names this model in settings (tasks/models/resolve.py makes it on first use).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
# Templates of the kinds real models carry, for tests of conversations under them. Each
# raises as its namesake does (their raise_exception calls copied in spirit, not verbatim).
CHATML_TEMPLATE = (  # Qwen2-style: any roles, any order
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (  # a leading system message is allowed; the rest must alternate user/assistant
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set system = '' %}"
    "{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + (system + '\\n\\n' if loop.first and system else '') + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
GEMMA_TEMPLATE = (  # no system role at all, and strict alternation
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/model/user/model/...') }}"
    "{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
# name -> (template, its marker tokens); "none" makes a tokenizer without a template.
TEMPLATES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "plain": (CHAT_TEMPLATE, ()),
    "chatml": (CHATML_TEMPLATE, ("<|im_start|>", "<|im_end|>")),
    "mistral": (MISTRAL_TEMPLATE, ("[INST]", "[/INST]")),
    "gemma": (GEMMA_TEMPLATE, ("<start_of_turn>", "<end_of_turn>")),
    "none": (None, ()),
}
ARCHITECTURES = ("llama", "qwen2", "mistral")
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
    folder: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    architecture: str = "llama",
    chat_template: str = "plain",
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int | None = None,
) -> Path:
    """Train a tokenizer and initialise a tiny causal LM, and save both to ``folder``.

    ``architecture`` is one of ``ARCHITECTURES``, ``chat_template`` a key of ``TEMPLATES``.
    Keep every layer width a multiple of 32 (hidden size, ``kv_heads * hidden_size /
    heads``, the intermediate size) for 4-bit on the CPU: bitsandbytes' CPU inference
    kernel packs rows in blocks of 32. Other widths are allowed, to test exactly that.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r}: expected one of {ARCHITECTURES}")
    if chat_template not in TEMPLATES:
        raise ValueError(f"chat_template {chat_template!r}: expected one of {sorted(TEMPLATES)}")
    template, markers = TEMPLATES[chat_template]
    specials = SPECIAL_TOKENS + list(markers)
    folder = Path(folder)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_texts(seed), trainer=trainer)
    # Constructor arguments, not attributes set later: only those are saved.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<pad>",
        eos_token="<|end|>",
        additional_special_tokens=specials[2:],
        padding_side="left",
        model_max_length=MAX_POSITIONS,
    )
    if template is not None:
        tokenizer.chat_template = template
    torch.manual_seed(seed)
    config_class, model_class = _classes(architecture)
    extra = {"sliding_window": None} if architecture == "mistral" else {}
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        **extra,
    )
    model = model_class(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # safetensors writes weights owner-only (0600); a docker job runs as another user and
    # must read them, as it reads the folder's other files.
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(path.stat().st_mode | 0o044)
    return folder


def _classes(architecture: str) -> tuple[type, type]:
    if architecture == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return Qwen2Config, Qwen2ForCausalLM
    if architecture == "mistral":
        from transformers import MistralConfig, MistralForCausalLM

        return MistralConfig, MistralForCausalLM
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaConfig, LlamaForCausalLM


if __name__ == "__main__":
    print(make_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))  # noqa: T201
