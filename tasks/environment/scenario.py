"""Scenarios: load and validate them, describe them to an agent, and materialise them on disk.

A scenario is data (``shared/spec/environment.md``): files under a few system roots, each
junk or protected, with a size and an age. Contents are real bytes derived from
``(seed, path)`` with SHAKE-256, so they are the same on every machine and a protected
file's change shows in its hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agir_retrain.tasks.environment.contract import FileKind, Scenario, ScenarioFile
from agir_retrain.tasks.errors import AgirError

# The folders a scenario may fill; each is bound writable into the sandbox, nothing else is.
SCENARIO_ROOTS = ("/var", "/tmp", "/home", "/root", "/opt", "/srv", "/etc")
MAX_FILE_BYTES = 256 << 20  # one scenario file; larger ones would make episodes slow
MAX_TOTAL_BYTES = 1 << 30  # a whole scenario is copied for every episode
MAX_FILES = 100_000
_SCENARIO_KEYS = {"name", "seed", "files", "description"}
_FILE_KEYS = {"path", "bytes", "kind", "age_days"}
_DAY_S = 86_400.0


class ScenarioError(AgirError):
    """A scenario file or profile name cannot be used."""


def load_scenario(name_or_path: str) -> Scenario:
    """Load a built-in profile by name, or a scenario JSON file by path."""
    from agir_retrain.tasks.environment.profiles import PROFILES, build_profile

    if name_or_path in PROFILES:
        return build_profile(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise ScenarioError(
            f"{name_or_path!r}: neither a built-in profile ({', '.join(sorted(PROFILES))}) "
            "nor a scenario file"
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
        raise ScenarioError(f"{source}: 'name' must be a non-empty string, got {name!r}")
    seed = data.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ScenarioError(f"{source}: 'seed' must be an integer, got {seed!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{source}: 'description' must be a string, got {description!r}")
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
    import orjson  # here: loading must work without it (see _json_loads)

    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


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


def _check_path(path: Any, where: str) -> None:
    if not isinstance(path, str) or not path:
        raise ScenarioError(f"{where}: 'path' must be a non-empty string, got {path!r}")
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
    if any(len(p.encode()) > 255 for p in parts) or len(path.encode()) > 4000:
        raise ScenarioError(f"{where}: path {path[:80]!r}... is too long")


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


@dataclass(frozen=True, slots=True)
class _Template:
    """A scenario's contents held in memory, built once per process."""

    contents: dict[str, bytes]  # path -> bytes
    digests: dict[str, bytes]  # path -> blake2b-128 of its contents
    folders: tuple[str, ...]  # every folder to create, parents first


_TEMPLATES: OrderedDict[Scenario, _Template] = OrderedDict()
_TEMPLATE_CACHE_SIZE = 8
# The same Scenario object is run many times: find it by identity before hashing all its files.
_BY_ID: dict[int, tuple[Scenario, _Template]] = {}


def file_content(seed: int, path: str, size: int) -> bytes:
    """The bytes of a scenario file: SHAKE-256 of ``(seed, path)``, deterministic everywhere."""
    return hashlib.shake_256(f"agir-scenario\0{seed}\0{path}".encode()).digest(size)


def digest(data: bytes) -> bytes:
    """The hash that tells whether a file changed."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _template(scenario: Scenario) -> _Template:
    known = _BY_ID.get(id(scenario))
    if known is not None and known[0] is scenario:
        return known[1]
    cached = _TEMPLATES.get(scenario)
    if cached is not None:
        _TEMPLATES.move_to_end(scenario)
        _remember(scenario, cached)
        return cached
    contents = {f.path: file_content(scenario.seed, f.path, f.bytes) for f in scenario.files}
    folders: set[str] = set(SCENARIO_ROOTS)
    for f in scenario.files:
        parent = posixpath.dirname(f.path)
        while parent != "/" and parent not in folders:
            folders.add(parent)
            parent = posixpath.dirname(parent)
    template = _Template(
        contents=contents,
        digests={p: digest(b) for p, b in contents.items()},
        folders=tuple(sorted(folders, key=lambda p: (p.count("/"), p))),
    )
    _TEMPLATES[scenario] = template
    if len(_TEMPLATES) > _TEMPLATE_CACHE_SIZE:
        _TEMPLATES.popitem(last=False)
    _remember(scenario, template)
    return template


def _remember(scenario: Scenario, template: _Template) -> None:
    # holding the object keeps its id from being reused while it is in the map
    if len(_BY_ID) >= _TEMPLATE_CACHE_SIZE:
        _BY_ID.clear()
    _BY_ID[id(scenario)] = (scenario, template)


def expected_digests(scenario: Scenario) -> dict[str, bytes]:
    """Each scenario file's content hash, as materialised."""
    return _template(scenario).digests


def materialise(
    scenario: Scenario, root: Path, clock: float, *, owner: tuple[int, int] | None = None
) -> None:
    """Write a fresh copy of the scenario under ``root`` (``root/var/...``), mtimes from ``clock``.

    Every root folder is created, filled or not, so the sandbox can bind them all. ``owner``
    (uid, gid) chowns what is written, for a sandbox that runs the program as another user.
    """
    template = _template(scenario)
    base = os.fspath(root)
    os.makedirs(base, exist_ok=True)
    for folder in template.folders:
        target = base + folder
        os.mkdir(target)
        if owner is not None:
            os.chown(target, *owner)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for f in scenario.files:
        target = base + f.path
        fd = os.open(target, flags, 0o644)
        try:
            view = memoryview(template.contents[f.path])
            while view:
                view = view[os.write(fd, view) :]
            if owner is not None:
                os.fchown(fd, *owner)
            mtime = clock - f.age_days * _DAY_S
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)


def _json_loads(raw: bytes) -> Any:
    """orjson's ``loads``, or the standard library's on GPU machines without orjson (GRPO)."""
    try:
        import orjson
    except ImportError:
        return json.loads(raw, parse_constant=_refuse_constant)
    return orjson.loads(raw)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # as orjson refuses NaN and Infinity
