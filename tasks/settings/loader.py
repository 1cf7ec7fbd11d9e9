"""Load a command's config: defaults < YAML file < environment (``AGIR_``) < flags.

Each command has one pydantic model (``IngestConfig``, ``BuildDatasetConfig``,
``TrainConfig``, ``RetrainConfig``; see ``tasks/settings.py``). ``load_config``
merges the layers, validates once, and remembers where each value came from so
``agir-retrain config show`` can say. Environment variables are read here and
nowhere else: ``AGIR_OUT=/data`` sets ``out``, ``AGIR_TRAINING__BETA=0.2`` sets
``training.beta`` (``__`` separates nesting levels).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from agir_retrain.tasks.errors import ConfigError

ENV_PREFIX = "AGIR_"
Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class LoadedConfig(Generic[Model]):
    """A validated config and where each of its leaf settings came from."""

    config: Model
    sources: dict[str, str]  # dotted key -> "default" | "file:<path>" | "env:<NAME>" | "flag"


def load_config(
    model: type[Model],
    yaml_path: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig[Model]:
    """Merge the layers for ``model`` and validate them.

    Args:
        model: the command's config model.
        yaml_path: a YAML file of settings (nested mappings, as the model nests).
        flags: settings from the command line, by dotted key (``training.beta``);
            ``None`` values mean "not given" and are skipped.
        environ: the environment to read (``os.environ`` by default).

    Raises:
        ConfigError: the file is unreadable, a key is unknown, or a value is invalid;
            the message names each bad key, the layer it came from, and the problem.
    """
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if yaml_path is not None:
        for key, value in _flatten(_read_yaml(yaml_path)).items():
            _set(merged, key, value)
            sources[key] = f"file:{yaml_path}"
    for key, (name, value) in _env_settings(model, environ or os.environ).items():
        _set(merged, key, value)
        sources[key] = f"env:{name}"
    for key, value in (flags or {}).items():
        if value is None:
            continue
        _set(merged, key, value)
        sources[key] = "flag"
    try:
        config = model.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_explain(error, sources)) from error
    for key in leaf_keys(model):
        sources.setdefault(key, "default")
    return LoadedConfig(config=config, sources=sources)


def _read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part!r} is a value, not a section")
        target = child
    target[leaf] = value


def _env_settings(model: type[BaseModel], environ: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """Settings from ``AGIR_*`` variables; values are parsed as YAML scalars or lists."""
    known = set(leaf_keys(model)) | set(section_keys(model))
    found: dict[str, tuple[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        if key not in known:
            continue  # other AGIR_* variables belong to other commands
        try:
            value = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            value = raw
        found[key] = (name, raw if isinstance(value, dict) else value)
    return found


def _walk(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, bool]]:
    """Every setting's dotted key, and whether it is a nested section, in field order."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield f"{prefix}{name}", True
            yield from _walk(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", False


def leaf_keys(model: type[BaseModel]) -> list[str]:
    """Every setting of a model as a dotted key, nested sections expanded."""
    return [key for key, section in _walk(model) if not section]


def section_keys(model: type[BaseModel]) -> list[str]:
    """The dotted keys of a model's nested sections."""
    return [key for key, section in _walk(model) if section]


def field_description(model: type[BaseModel], dotted: str) -> str:
    """The help text of a setting: its ``Field(description=...)``, the only copy of it."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return model.model_fields[leaf].description or ""


def value_at(config: BaseModel, dotted: str) -> Any:
    """Read a setting by dotted key."""
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def masked(value: Any) -> Any:
    """Hide secrets when showing or logging a value."""
    return "**********" if isinstance(value, SecretStr) and value.get_secret_value() else value


def _explain(error: ValidationError, sources: Mapping[str, str]) -> str:
    lines = ["invalid configuration:"]
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        origin = sources.get(key, "default")
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {key} (from {origin}): unknown setting; check its spelling")
        else:
            lines.append(f"  {key} (from {origin}): {problem['msg']}")
    return "\n".join(lines)
