"""Load a command's config: defaults < YAML file < environment (``AGIR_``) < flags.

Each command has one pydantic model (``IngestConfig``, ``BuildDatasetConfig``,
``TrainConfig``, ``RetrainConfig``, ...; see ``tasks/settings/models.py``). ``load_config``
merges the layers, validates once, and remembers where each value came from so
``agir-retrain config show`` can say. Environment variables are read here and
nowhere else: ``AGIR_OUT=/data`` sets ``out``, ``AGIR_TRAIN__LORA__R=8`` sets
``train.lora.r`` of ``retrain`` (``__`` separates nesting levels). A variable that
names no setting of any command is an error, as a misspelt YAML key is; one that names
another command's setting is left to that command.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from agir_retrain.tasks.errors import ConfigError

ENV_PREFIX = "AGIR_"
# AGIR_* variables that are not settings: read where they are used, never by load_config.
OTHER_VARIABLES = frozenset({"AGIR_CACHE_DIR", "AGIR_PROJECT_DIR"})
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
    environ = os.environ if environ is None else environ
    file_values = _flatten(_read_yaml(yaml_path)) if yaml_path is not None else {}
    flag_values = {key: value for key, value in (flags or {}).items() if value is not None}
    # Settings that register more settings (objective plugins) act before keys are known.
    _prepare(model, [flag_values, _raw_env(environ), file_values])
    for key, value in file_values.items():
        _set(merged, key, value)
        sources[key] = f"file:{yaml_path}"
    for key, (name, value) in _env_settings(model, environ).items():
        _set(merged, key, value)
        sources[key] = f"env:{name}"
    for key, value in flag_values.items():
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


def _prepare(model: type[BaseModel], layers: list[dict[str, Any]], prefix: str = "") -> None:
    """Let each model (and nested section) act on its raw values before validation.

    ``prepare_settings(lookup)``, where a model has it, reads a setting by key (relative to
    the model) from the first layer that gives it; ``TrainConfig`` registers the
    objectives its ``objective_plugins`` name, whose sections are then known settings.
    """
    hook = getattr(model, "prepare_settings", None)
    if hook is not None:

        def lookup(key: str) -> Any:
            for layer in layers:
                if prefix + key in layer:
                    return layer[prefix + key]
            return None

        hook(lookup)
    for name, (annotation, _help) in setting_fields(model).items():
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _prepare(annotation, layers, f"{prefix}{name}.")


def _raw_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Every ``AGIR_*`` variable by dotted key, its value read as YAML (not yet checked)."""
    found: dict[str, Any] = {}
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX) and name not in OTHER_VARIABLES:
            found[name[len(ENV_PREFIX) :].lower().replace("__", ".")] = _yaml_value(raw)
    return found


def _yaml_value(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw) if raw else raw
    except yaml.YAMLError:
        return raw
    return raw if isinstance(value, dict) else value


def _env_settings(model: type[BaseModel], environ: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """Settings from ``AGIR_*`` variables; values are parsed as YAML scalars or lists.

    Raises:
        ConfigError: a variable names no setting of any command (a misspelling).
    """
    known = set(leaf_keys(model)) | set(section_keys(model))
    found: dict[str, tuple[str, Any]] = {}
    unknown: list[str] = []
    every: frozenset[str] | None = None  # every command's keys, made once when first needed
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in OTHER_VARIABLES:
            continue
        key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        if key not in known:
            every = every if every is not None else _keys_of_every_command(environ)
            if key not in every:
                unknown.append(name)
            continue  # another command's setting
        found[key] = (name, _yaml_value(raw))
    if unknown:
        raise ConfigError(
            "invalid configuration:\n"
            + "\n".join(
                f"  {name} (from env): names no setting of any command; check its spelling "
                "(nesting is '__': AGIR_READ__MAX_FILE_BYTES)"
                for name in sorted(unknown)
            )
        )
    return found


def _keys_of_every_command(environ: Mapping[str, str]) -> frozenset[str]:
    """Every dotted key of every command's config model (with the plugins ``environ`` names)."""
    # Imported here: the models import this module's helpers.
    from agir_retrain.tasks.settings import evaluation, models
    from agir_retrain.tasks.settings.base import Section

    del evaluation, models  # imported for their config classes, found as Section subclasses
    keys: set[str] = set()
    pending = list(Section.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__name__.endswith("Config"):
            _prepare(cls, [_raw_env(environ)])
            keys.update(leaf_keys(cls), section_keys(cls))
    return frozenset(keys)


def parse_set_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` pairs into dotted overrides; values are read as YAML.

    Raises:
        ConfigError: a pair has no ``=``, or its value is not valid YAML.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes key=value, got {pair!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError as error:
            problem = str(error).splitlines()[0]
            raise ConfigError(
                f"--set {key.strip()}: {raw!r} is not valid YAML ({problem})"
            ) from error
    return overrides


def _walk(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, bool]]:
    """Every setting's dotted key, and whether it is a nested section, in field order."""
    for name, (annotation, _help) in setting_fields(model).items():
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield f"{prefix}{name}", True
            yield from _walk(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", False


def setting_fields(model: type[BaseModel]) -> dict[str, tuple[Any, str]]:
    """A model's settings: name -> (type, help text); a ``Section`` adds any decided at run time."""
    fields = getattr(model, "setting_fields", None)
    if fields is not None:
        return fields()
    return {
        name: (info.annotation, info.description or "") for name, info in model.model_fields.items()
    }


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
        model = setting_fields(model)[part][0]
    return setting_fields(model)[leaf][1]


def field_type(model: type[BaseModel], dotted: str) -> Any:
    """The annotated type of a setting, by dotted key."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        model = setting_fields(model)[part][0]
    return setting_fields(model)[leaf][0]


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
