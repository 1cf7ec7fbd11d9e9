"""Scenarios: load and validate them, describe them to an agent, and materialise them on disk.

A scenario is data (``shared/spec/environment.md``): files under a few system roots, each
junk or protected, with a size and an age. Contents are real bytes derived from
``(seed, path)`` with SHAKE-256, so they are the same on every machine and a protected
file's change shows in its hash.
"""

from __future__ import annotations

import json
import math
import posixpath
from pathlib import Path
from typing import Any

from agir_retrain.tasks.environment.contract import (
    SCENARIO_ROOTS,
    FileKind,
    Scenario,
    ScenarioFile,
)
from agir_retrain.tasks.environment.copies import (  # noqa: F401  (the names callers know)
    digest,
    expected_digests,
    file_content,
    materialise,
)
from agir_retrain.tasks.errors import AgirError

MAX_FILE_BYTES = 256 << 20  # one scenario file; larger ones would make episodes slow
MAX_TOTAL_BYTES = 1 << 30  # a whole scenario is copied for every episode
MAX_FILES = 100_000
# A path's bytes, at most: PATH_MAX (4,096) less room for a host folder it may be copied
# under (the docker and plain backends), so no valid scenario fails later as too long.
MAX_PATH_BYTES = 3072
MAX_SEED = 1 << 63  # seeds are 64-bit signed integers
_SCENARIO_KEYS = {"name", "seed", "files", "description"}
_FILE_KEYS = {"path", "bytes", "kind", "age_days"}


class ScenarioError(AgirError):
    """A scenario file or profile name cannot be used."""


def load_scenario(name_or_path: str) -> Scenario:
    """Load a built-in profile by name, or a scenario JSON file by path."""
    from agir_retrain.tasks.environment.generator import is_generated_name, scenario_by_name
    from agir_retrain.tasks.environment.profiles import PROFILES, build_profile

    if name_or_path in PROFILES:
        return build_profile(name_or_path)
    if is_generated_name(name_or_path):
        return scenario_by_name(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise ScenarioError(
            f"{name_or_path!r}: neither a built-in profile ({', '.join(sorted(PROFILES))}), "
            "a generated one (gen-<seed>) nor a scenario file"
        )
    try:
        data = _json_loads(path.read_bytes())
    except (OSError, ValueError) as exc:  # orjson's JSONDecodeError is a ValueError
        raise ScenarioError(f"{path}: not readable as JSON: {exc}") from exc
    return parse_scenario(data, str(path))


def parse_scenario(data: Any, source: str) -> Scenario:
    """Validate a scenario's JSON value; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _SCENARIO_KEYS)
    if unknown:
        raise ScenarioError(
            f"{source}: unknown key(s) {unknown}; allowed: {sorted(_SCENARIO_KEYS)}"
        )
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ScenarioError(f"{source}: 'name' must be a non-empty string, got {name!r:.80}")
    if not _is_utf8(name):
        raise ScenarioError(f"{source}: 'name' {name!r:.80} is not valid UTF-8")
    seed = data.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ScenarioError(f"{source}: 'seed' must be an integer, got {seed!r:.80}")
    if not -MAX_SEED <= seed < MAX_SEED:
        raise ScenarioError(f"{source}: 'seed' must be a 64-bit integer, got {str(seed)[:40]}")
    description = data.get("description", "")
    if not isinstance(description, str) or not _is_utf8(description):
        raise ScenarioError(
            f"{source}: 'description' must be a UTF-8 string, got {description!r:.80}"
        )
    files = data.get("files")
    if not isinstance(files, list) or not files:
        raise ScenarioError(f"{source}: 'files' must be a non-empty list, got {files!r:.80}")
    if len(files) > MAX_FILES:
        raise ScenarioError(f"{source}: {len(files)} files; at most {MAX_FILES}")
    parsed = tuple(_parse_file(entry, f"{source}: files[{i}]") for i, entry in enumerate(files))
    _check_layout(parsed, source)
    return Scenario(name=name, seed=seed, files=parsed, description=description)


def scenario_to_json(scenario: Scenario) -> bytes:
    """The scenario as the JSON a scenario file holds (loads back equal)."""
    files = []
    for f in scenario.files:
        entry: dict[str, Any] = {"path": f.path, "bytes": f.bytes, "kind": f.kind.value}
        if f.age_days:
            entry["age_days"] = f.age_days
        files.append(entry)
    data: dict[str, Any] = {"name": scenario.name, "seed": scenario.seed, "files": files}
    if scenario.description:
        data["description"] = scenario.description
    return _json_dumps(data)


def _parse_file(entry: Any, where: str) -> ScenarioFile:
    if not isinstance(entry, dict):
        raise ScenarioError(f"{where}: a file is a JSON object, got {entry!r:.80}")
    unknown = sorted(set(entry) - _FILE_KEYS)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_FILE_KEYS)}")
    path = entry.get("path")
    _check_path(path, where)
    size = entry.get("bytes")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_BYTES:
        raise ScenarioError(
            f"{where} ({path}): 'bytes' must be an integer from 0 to {MAX_FILE_BYTES}, got {size!r}"
        )
    kind = entry.get("kind")
    if kind not in {k.value for k in FileKind}:
        raise ScenarioError(f"{where} ({path}): 'kind' must be 'junk' or 'protected', got {kind!r}")
    age = entry.get("age_days", 0)
    if (
        not isinstance(age, int | float)
        or isinstance(age, bool)
        or not math.isfinite(age)
        or not 0 <= age <= 36_500
    ):
        raise ScenarioError(
            f"{where} ({path}): 'age_days' must be a number from 0 to 36500, got {age!r}"
        )
    return ScenarioFile(path=path, bytes=size, kind=FileKind(kind), age_days=float(age))


def _is_utf8(text: str) -> bool:
    """False for a string UTF-8 cannot hold (a lone surrogate, as the stdlib's JSON reads)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_path(path: Any, where: str) -> None:
    if not isinstance(path, str) or not path:
        raise ScenarioError(f"{where}: 'path' must be a non-empty string, got {path!r:.80}")
    if not _is_utf8(path):
        raise ScenarioError(f"{where}: path {path!r:.80} is not valid UTF-8 (a lone surrogate)")
    if not path.startswith("/"):
        raise ScenarioError(f"{where}: path {path!r} is relative; paths are absolute")
    parts = path.split("/")[1:]
    if ".." in parts or "." in parts:
        raise ScenarioError(f"{where}: path {path!r} holds '.' or '..'")
    if "\x00" in path or any(not p for p in parts) or posixpath.normpath(path) != path:
        raise ScenarioError(f"{where}: path {path!r} is not a plain normalised path")
    if len(parts) < 2 or f"/{parts[0]}" not in SCENARIO_ROOTS:
        raise ScenarioError(
            f"{where}: path {path!r} is not a file under one of {', '.join(SCENARIO_ROOTS)}"
        )
    if any(len(p.encode()) > 255 for p in parts):
        raise ScenarioError(f"{where}: path {path[:80]!r}... has a name over 255 bytes")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise ScenarioError(
            f"{where}: path {path[:80]!r}... is {len(path.encode())} bytes; at most {MAX_PATH_BYTES}"
        )


def _check_layout(files: tuple[ScenarioFile, ...], source: str) -> None:
    seen: set[str] = set()
    for f in files:
        if f.path in seen:
            raise ScenarioError(f"{source}: duplicate path {f.path!r}")
        seen.add(f.path)
    for f in files:  # a file cannot also be a folder of another file
        parent = posixpath.dirname(f.path)
        while parent != "/":
            if parent in seen:
                raise ScenarioError(
                    f"{source}: {parent!r} is a file and also the folder of {f.path!r}"
                )
            parent = posixpath.dirname(parent)
    total = sum(f.bytes for f in files)
    if total > MAX_TOTAL_BYTES:
        raise ScenarioError(f"{source}: {total} bytes in all; at most {MAX_TOTAL_BYTES}")


def junk_bytes_total(scenario: Scenario) -> int:
    """Bytes of junk in the scenario."""
    return sum(f.bytes for f in scenario.files if f.kind is FileKind.JUNK)


MAX_DESCRIPTION_FOLDERS = 36  # deeper folders are folded into their parents past this


def describe_scenario(scenario: Scenario) -> str:
    """Describe the machine as an agent would see it: folders with their sizes, not the kinds.

    Folders are listed with their size, file count and oldest file; past 36 folders the
    deepest are folded into their parents (hash-named cache trees go first).
    """
    # folder -> [bytes, files, oldest age in days, subfolders folded in]
    lines: dict[str, list[float]] = {}
    for f in scenario.files:
        line = lines.setdefault(posixpath.dirname(f.path), [0, 0, 0.0, 0])
        line[0] += f.bytes
        line[1] += 1
        line[2] = max(line[2], f.age_days)
    while len(lines) > MAX_DESCRIPTION_FOLDERS:
        deepest = max(lines, key=lambda p: (p.count("/"), p))
        parent = posixpath.dirname(deepest)
        if parent == "/":
            break
        merged = lines.setdefault(parent, [0, 0, 0.0, 0])
        for folder in [p for p in lines if posixpath.dirname(p) == parent]:
            size, count, oldest, folded = lines.pop(folder)
            merged[0] += size
            merged[1] += count
            merged[2] = max(merged[2], oldest)
            merged[3] += folded + 1
    total = sum(f.bytes for f in scenario.files)
    used_roots = [
        r for r in SCENARIO_ROOTS if any(f.path.startswith(r + "/") for f in scenario.files)
    ]
    out = [scenario.description.strip()] if scenario.description else []
    out.append(
        f"The machine's data folders hold {len(scenario.files)} files, {_human(total)} in all "
        f"(under {', '.join(used_roots)}); the system folders (/usr) are read-only and there "
        "is no network."
    )
    out.append("Folders (size, files, oldest file in days, path):")
    for folder in sorted(lines):
        size, count, oldest, folded = lines[folder]
        more = f" (and {int(folded)} subfolders)" if folded else ""
        out.append(
            f"  {_human(int(size)):>9}  {int(count):>4} files  {oldest:>5.0f} days  {folder}/{more}"
        )
    return "\n".join(out)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _json_dumps(data: dict[str, Any]) -> bytes:
    """orjson's indented JSON, or the standard library's same layout on GPU machines without
    orjson (collect's attempts record there, in the GPU check)."""
    try:
        import orjson
    except ImportError:
        return json.dumps(data, indent=2, ensure_ascii=False).encode() + b"\n"
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def _json_loads(raw: bytes) -> Any:
    """orjson's ``loads``, or the standard library's on GPU machines without orjson (GRPO)."""
    try:
        import orjson
    except ImportError:
        return json.loads(raw, parse_constant=_refuse_constant)
    return orjson.loads(raw)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # as orjson refuses NaN and Infinity
