"""GGUF base models: converted once into a normal Hugging Face folder, cached by the file's digest.

transformers reads a GGUF file (``from_pretrained(folder, gguf_file=name)``) by dequantising
every tensor to float32 and rebuilding the tokenizer and chat template from its metadata,
which takes ~20 s for a 135M model. Doing that in every process (each sampling actor,
each training rank) would repeat it; so a GGUF base is converted once into
``<cache>/models/gguf-<sha256 prefix>/`` (safetensors, config, tokenizer with its chat
template, generation config, and ``gguf-source.json`` naming the file it came from), and
every later process loads that folder like any other. The folder is named by the file's
content, so a renamed or copied file reuses it and a changed file makes a new one.

Concurrent first uses wait on one lock per digest; the conversion is staged beside the
final folder and renamed into place, so a reader sees a whole folder or none.

What transformers' GGUF loader cannot read (an architecture it has no mapping for, a
tensor type gguf-py cannot dequantise, a tokenizer model it cannot rebuild) is refused in
one line (``ConfigError``) before anything is written.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agir_retrain.tasks.errors import ConfigError

log = logging.getLogger(__name__)

# The part of the sha256 that names a cached folder: 16 hex digits (64 bits) keep names short
# and never collide among the files one machine holds; the full digest is in gguf-source.json.
DIGEST_PREFIX = 16
SOURCE_FILE = "gguf-source.json"
# How long a process waits for another one's conversion of the same file before giving up.
LOCK_WAIT_S = 1800.0
_GGUF_INSTALL = "pip install gguf==0.19.0 (or `make real-model`)"


@dataclass(frozen=True, slots=True, kw_only=True)
class GgufSource:
    """A GGUF file as the cache knows it: where it is, its digest, and its converted folder."""

    path: Path
    sha256: str
    folder: Path


def is_gguf(name: str) -> bool:
    """Whether a base model name is a GGUF file (by its suffix; it need not exist yet)."""
    return name.lower().endswith(".gguf")


def gguf_source(path: str | Path, cache_dir: Path) -> GgufSource:
    """The file's digest and the cache folder it converts to (nothing is converted here).

    Raises:
        ConfigError: the file does not exist or is not a GGUF file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"base_model={str(path)!r}: no such GGUF file")
    with open(path, "rb") as handle:
        magic = handle.read(4)
        if magic != b"GGUF":
            raise ConfigError(
                f"base_model={str(path)!r}: not a GGUF file (it starts with {magic!r}, not b'GGUF')"
            )
        handle.seek(0)
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    folder = cache_dir / "models" / f"gguf-{digest[:DIGEST_PREFIX]}"
    return GgufSource(path=path.resolve(), sha256=digest, folder=folder)


def converted_folder(path: str | Path, cache_dir: Path) -> Path:
    """The converted folder of a GGUF file: made on first use, reused by every later process.

    Raises:
        ConfigError: not a GGUF file, the ``gguf`` package is missing, or transformers' GGUF
            loader does not support its architecture, a tensor type or its tokenizer.
    """
    source = gguf_source(path, cache_dir)
    if _complete(source.folder):
        return source.folder
    source.folder.parent.mkdir(parents=True, exist_ok=True)
    with _lock(source.folder.with_name(f".{source.folder.name}.lock")):
        if _complete(source.folder):  # another process converted it while we waited
            return source.folder
        check_supported(source.path)
        staging = Path(tempfile.mkdtemp(prefix=f".{source.folder.name}.", dir=source.folder.parent))
        try:
            started = time.perf_counter()
            convert(source, staging)
            os.rename(staging, source.folder)
            log.info(
                "converted %s to %s in %.1f s",
                source.path,
                source.folder,
                time.perf_counter() - started,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return source.folder


def _complete(folder: Path) -> bool:
    # The source record is written last, so a folder that has it is whole.
    return (folder / SOURCE_FILE).is_file()


@contextmanager
def _lock(path: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """An exclusive lock on ``path``, waited for at most ``wait_s`` seconds."""
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"waited {wait_s:.0f} s for another process converting into "
                        f"{path.parent}; remove {path} if no conversion is running"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def check_supported(path: Path) -> None:
    """Refuse, in one line, a GGUF file transformers' loader cannot turn into a model.

    Reads the metadata and tensor table only (no weights): the architecture must be one
    transformers maps, every tensor type one gguf-py dequantises, the tokenizer model one
    transformers rebuilds.
    """
    gguf = _import_gguf()
    import numpy as np
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read it as GGUF: {_first_line(exc)}") from exc
    architecture = _field_text(reader, "general.architecture")
    # The mapping's keys are architectures plus two metadata sections.
    architectures = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
    if architecture not in architectures:
        raise ConfigError(
            f"{path}: GGUF architecture {architecture!r} is not supported by transformers' GGUF "
            f"loader (it reads {', '.join(architectures)}); convert the model to a Hugging Face "
            "folder another way and give that folder"
        )
    unreadable: dict[str, str] = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type
        if kind.name in unreadable.values():
            continue
        _, type_bytes = gguf.GGML_QUANT_SIZES[kind]
        try:  # one block of zeros: gguf-py raises NotImplementedError for a type it cannot read
            gguf.quants.dequantize(np.zeros((1, type_bytes), dtype=np.uint8), kind)
        except NotImplementedError:
            unreadable[tensor.name] = kind.name
    if unreadable:
        name, kind = next(iter(unreadable.items()))
        raise ConfigError(
            f"{path}: tensor {name} is {kind}, a quantisation gguf {_version('gguf')} cannot "
            f"dequantise (types not readable: {', '.join(sorted(set(unreadable.values())))}); "
            "use a file quantised as F16, BF16, Q8_0, Q4_K or another type gguf-py reads"
        )
    tokenizer_model = _field_text(reader, "tokenizer.ggml.model")
    if tokenizer_model is None:
        raise ConfigError(f"{path}: no tokenizer in the GGUF metadata (tokenizer.ggml.model)")


def convert(source: GgufSource, folder: Path) -> None:
    """Load the GGUF file with transformers and save it as a normal folder (float32 weights).

    transformers refuses to ``save_pretrained`` a model loaded from GGUF ("The model is
    quantized with gguf and is not serializable", 5.23), though its weights are already
    plain dequantised tensors: they are copied into a fresh model of the same class, built
    from the config without its ``quantization_config``. float32 keeps exactly the values
    the loader produced (dequantised blocks are not bf16-exact); the dtype each use loads
    them in is chosen by the caller (``tasks/models/dtypes.py``).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = str(source.path.parent), source.path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=name, dtype=torch.float32
        )
    except (ValueError, NotImplementedError, KeyError, TypeError, IndexError, RuntimeError) as exc:
        raise ConfigError(
            f"{source.path}: transformers' GGUF loader cannot read it: {_first_line(exc)}"
        ) from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    with torch.device("meta"):  # no second copy of the weights: the loaded tensors are taken
        model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()  # assign replaced the tied parameters one by one
    model.generation_config = loaded.generation_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _write_source(source, folder)
    # safetensors writes owner-only files; a docker job (another user) mounts and reads them.
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(path.stat().st_mode | 0o044)
    folder.chmod(0o755)


def _write_source(source: GgufSource, folder: Path) -> None:
    import orjson

    version = _version
    record = {
        "gguf_file": str(source.path),
        "sha256": source.sha256,
        "bytes": source.path.stat().st_size,
        "converted_by": {"transformers": version("transformers"), "gguf": version("gguf")},
        "weights_dtype": "float32",
    }
    (folder / SOURCE_FILE).write_bytes(
        orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise ConfigError(
            f"a GGUF base model needs the gguf package, which is not installed: {_GGUF_INSTALL}"
        ) from None
    return gguf


def _field_text(reader: Any, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
