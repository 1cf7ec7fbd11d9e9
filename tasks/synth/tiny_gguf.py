"""The tiny model written as a GGUF file, as llama.cpp's converter writes a Llama.

For tests of GGUF base models (``tasks/models/gguf.py``) without a download: the tiny
Llama of ``tiny_model.py`` (widths in multiples of 32, so quantised blocks of 32 fit every
row) and its byte-level BPE tokenizer, stored under llama.cpp's names: the tokenizer as
the "gpt2" model (tokens in the byte alphabet, merges, special tokens marked control),
the chat template under ``tokenizer.chat_template``, q/k weights permuted to GGML's rotary
layout, norms in F32 and the linear layers in ``quantisation`` (F32, Q8_0 or Q4_1 via
gguf-py's quantiser). Needs the ``gguf`` package.

    python -m agir_retrain.tasks.synth.tiny_gguf /tmp/tiny.gguf
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

# Linear layers by their GGUF names; norms stay F32 (as llama.cpp keeps them).
_LAYER_TENSORS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def make_tiny_gguf(
    path: str | Path,
    *,
    quantisation: str = "Q8_0",
    architecture: str = "llama",
    seed: int = 0,
    unreadable_tensor: bool = False,
) -> Path:
    """Write the tiny Llama and its tokenizer to one GGUF file at ``path``.

    ``quantisation`` is the GGML type of the linear layers (F32, F16, Q8_0, Q4_1, ...).
    ``architecture`` is written as ``general.architecture`` (the weights stay a Llama's: a
    name transformers does not map makes a file it refuses). ``unreadable_tensor`` adds
    one tensor of type Q8_1, which gguf-py writes but cannot dequantise.
    """
    import gguf
    from safetensors.torch import load_file

    from agir_retrain.tasks.synth.tiny_model import make_tiny_model

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="tiny-gguf-") as scratch:
        folder = make_tiny_model(Path(scratch) / "model", seed=seed, hidden_size=64, kv_heads=2)
        config = json.loads((folder / "config.json").read_text())
        weights = {k: v.float().numpy() for k, v in load_file(folder / "model.safetensors").items()}
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        template = (folder / "chat_template.jinja").read_text()

    kind = gguf.GGMLQuantizationType[quantisation]
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_name("agir tiny llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"])
    writer.add_rope_freq_base(float(config["rope_parameters"]["rope_theta"]))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(int(kind))
    _add_tokenizer(writer, gguf, tokenizer, tokenizer_config, template)

    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        for name, hf_name in _LAYER_TENSORS.items():
            tensor = weights[f"{prefix}.{hf_name}.weight"]
            if name == "attn_q":
                tensor = _permute(tensor, heads)
            elif name == "attn_k":
                tensor = _permute(tensor, kv_heads)
            _add_weight(writer, gguf, f"blk.{layer}.{name}.weight", tensor, kind)
        for name, hf_name in _LAYER_NORMS.items():
            writer.add_tensor(f"blk.{layer}.{name}.weight", weights[f"{prefix}.{hf_name}.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    _add_weight(writer, gguf, "output.weight", weights["lm_head.weight"], kind)
    if unreadable_tensor:
        import numpy as np

        _, type_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_1]
        writer.add_tensor(  # one block: the writer reads the shape from its bytes
            "blk.0.extra.weight",
            np.zeros((1, type_bytes), dtype=np.uint8),
            raw_dtype=gguf.GGMLQuantizationType.Q8_1,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _permute(weights: Any, heads: int) -> Any:
    """HF's rotary layout to GGML's (llama.cpp's ``LlamaModel.permute``; transformers undoes it)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _add_weight(writer: Any, gguf: Any, name: str, tensor: Any, kind: Any) -> None:
    if kind == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, tensor)
        return
    writer.add_tensor(name, gguf.quants.quantize(tensor, kind), raw_dtype=kind)


def _add_tokenizer(
    writer: Any, gguf: Any, tokenizer: dict, tokenizer_config: dict, template: str
) -> None:
    """The byte-level BPE as llama.cpp's "gpt2" tokenizer model, special tokens as control."""
    vocab: dict[str, int] = dict(tokenizer["model"]["vocab"])
    for added in tokenizer["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError("the tokenizer's ids are not contiguous from 0")
    special = {added["content"] for added in tokenizer["added_tokens"] if added["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges(merges)
    writer.add_eos_token_id(vocab[tokenizer_config["eos_token"]])
    writer.add_pad_token_id(vocab[tokenizer_config["pad_token"]])
    writer.add_chat_template(template)


if __name__ == "__main__":
    print(make_tiny_gguf(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf"))  # noqa: T201
