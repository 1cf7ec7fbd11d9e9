"""Scenarios: validation errors name the field and value; materialisation is deterministic."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import orjson
import pytest

from agir_retrain.tasks.environment.contract import FileKind
from agir_retrain.tasks.environment.profiles import PROFILES, build_profile
from agir_retrain.tasks.environment.scenario import (
    SCENARIO_ROOTS,
    ScenarioError,
    describe_scenario,
    file_content,
    junk_bytes_total,
    load_scenario,
    materialise,
    parse_scenario,
    scenario_to_json,
)
from agir_retrain.tasks.errors import AgirError

CLOCK = 1_767_225_600.0
GOOD = {
    "name": "heavy-mix",
    "seed": 7,
    "files": [
        {"path": "/var/log/syslog.3.gz", "bytes": 1048576, "kind": "junk", "age_days": 40},
        {"path": "/var/cache/apt/archives/libfoo_1.0_amd64.deb", "bytes": 2097152, "kind": "junk"},
        {"path": "/home/agent/projects/report.txt", "bytes": 30000, "kind": "protected"},
        {"path": "/etc/app/settings.conf", "bytes": 120, "kind": "protected"},
    ],
}


def _with_file(**changes) -> dict:
    entry = {"path": "/var/log/x.log", "bytes": 10, "kind": "junk", **changes}
    return {"name": "s", "seed": 1, "files": [entry]}


def test_the_spec_example_parses():
    scenario = parse_scenario(GOOD, "example.json")
    assert scenario.name == "heavy-mix"
    assert scenario.seed == 7
    assert [f.kind for f in scenario.files] == [FileKind.JUNK] * 2 + [FileKind.PROTECTED] * 2
    assert scenario.files[0].age_days == 40.0
    assert scenario.files[1].age_days == 0.0
    assert junk_bytes_total(scenario) == 3 * 1048576


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "a scenario is a JSON object, got list"),
        (_with_file(path="/var/log/\ud800.log"), "is not valid UTF-8 (a lone surrogate)"),
        (  # ~4 KB: room is left for the host folder a copy may lie under
            _with_file(path="/var/" + "/".join(["d" * 200] * 19) + "/x"),
            "bytes; at most 3072",
        ),
        ({**GOOD, "seed": 1 << 64}, "'seed' must be a 64-bit integer"),
        ({**GOOD, "owner": "x"}, "unknown key(s) ['owner']"),
        ({**GOOD, "seed": "7"}, "'seed' must be an integer, got '7'"),
        ({**GOOD, "seed": True}, "'seed' must be an integer, got True"),
        ({**GOOD, "name": ""}, "'name' must be a non-empty string"),
        ({**GOOD, "files": []}, "'files' must be a non-empty list"),
        (_with_file(mode=644), "files[0]: unknown key(s) ['mode']"),
        (_with_file(path="var/log/x"), "path 'var/log/x' is relative"),
        (_with_file(path="/var/log/../../etc/x"), "path '/var/log/../../etc/x' holds '.' or '..'"),
        (_with_file(path="/var//x"), "is not a plain normalised path"),
        (_with_file(path="/usr/lib/x.so"), "path '/usr/lib/x.so' is not a file under one of /var"),
        (_with_file(path="/proc/1/mem"), "is not a file under one of"),
        (_with_file(path="/var"), "path '/var' is not a file under one of"),
        (_with_file(kind="trash"), "'kind' must be 'junk' or 'protected', got 'trash'"),
        (_with_file(bytes=-1), "'bytes' must be an integer from 0 to"),
        (_with_file(bytes=1.5), "'bytes' must be an integer from 0 to"),
        (_with_file(bytes=1 << 40), "'bytes' must be an integer from 0 to"),
        (_with_file(age_days=-2), "'age_days' must be a number from 0 to 36500, got -2"),
        (_with_file(age_days="old"), "'age_days' must be a number"),
    ],
)
def test_a_bad_scenario_is_a_one_line_error_naming_what_is_wrong(data, message):
    with pytest.raises(ScenarioError) as failure:
        parse_scenario(data, "bad.json")
    text = str(failure.value)
    assert text.startswith("bad.json")
    assert message in text
    assert "\n" not in text
    assert isinstance(failure.value, AgirError)


def test_duplicates_and_a_file_that_is_also_a_folder_are_errors():
    twice = {"name": "s", "seed": 1, "files": [GOOD["files"][0], GOOD["files"][0]]}
    with pytest.raises(ScenarioError, match=r"duplicate path '/var/log/syslog.3.gz'"):
        parse_scenario(twice, "dup.json")
    nested = {
        "name": "s",
        "seed": 1,
        "files": [
            {"path": "/var/a", "bytes": 1, "kind": "junk"},
            {"path": "/var/a/b", "bytes": 1, "kind": "junk"},
        ],
    }
    with pytest.raises(
        ScenarioError, match=r"'/var/a' is a file and also the folder of '/var/a/b'"
    ):
        parse_scenario(nested, "nested.json")


def test_load_scenario_reads_a_file_and_names_a_missing_one(tmp_path):
    path = tmp_path / "s.json"
    path.write_bytes(orjson.dumps(GOOD))
    assert load_scenario(str(path)) == parse_scenario(GOOD, "x")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ScenarioError, match=r"broken\.json: not readable as JSON"):
        load_scenario(str(tmp_path / "broken.json"))
    with pytest.raises(
        ScenarioError, match=r"neither a built-in profile .*debian-like.* nor a scenario file"
    ):
        load_scenario("no-such-profile")


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_each_profile_is_valid_seeded_and_a_few_mib(name):
    scenario = load_scenario(name)
    assert scenario == build_profile(name)  # the seed is part of the profile
    assert parse_scenario(orjson.loads(scenario_to_json(scenario)), name) == scenario
    total = sum(f.bytes for f in scenario.files)
    assert 1 << 20 < total < 8 << 20
    kinds = {f.kind for f in scenario.files}
    assert kinds == {FileKind.JUNK, FileKind.PROTECTED}


def test_the_debian_like_profile_has_the_realistic_kinds_of_junk_and_protected_files():
    scenario = load_scenario("debian-like")
    junk = [f.path for f in scenario.files if f.kind is FileKind.JUNK]
    protected = [f.path for f in scenario.files if f.kind is FileKind.PROTECTED]
    for marker in (
        ".gz",
        "/var/cache/apt/archives/",
        "/.cache/pip/",
        "/.npm/",
        "core",
        "__pycache__",
        "/tmp/",
    ):
        assert any(marker in p for p in junk), marker
    for marker in ("/home/agent/Documents/", "/etc/", "/var/log/syslog"):
        assert any(marker in p for p in protected), marker


def _tree(root: Path) -> dict[str, tuple[str, float, int]]:
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            info = path.stat()
            out[str(path.relative_to(root))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                info.st_mtime,
                info.st_blocks,
            )
    return out


def test_materialise_writes_the_same_real_bytes_with_mtimes_from_the_ages(tmp_path):
    scenario = parse_scenario(GOOD, "example.json")
    materialise(scenario, tmp_path / "a", CLOCK)
    materialise(scenario, tmp_path / "b", CLOCK)
    first, second = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert first == second
    assert len(first) == 4
    # contents are SHAKE-256 of (seed, path): pinned, so they are the same on any machine
    log = (tmp_path / "a/var/log/syslog.3.gz").read_bytes()
    assert len(log) == 1048576
    assert log == file_content(7, "/var/log/syslog.3.gz", 1048576)
    assert hashlib.sha256(file_content(7, "/var/log/syslog.3.gz", 64)).hexdigest() == (
        hashlib.sha256(log[:64]).hexdigest()
    )
    assert file_content(7, "/x", 8).hex() == hashlib.shake_256(
        b"agir-scenario\x007\x00/x"
    ).hexdigest(8)
    assert log != file_content(8, "/var/log/syslog.3.gz", 1048576)  # the seed matters
    # mtimes count back from the clock; files are not sparse
    info = (tmp_path / "a/var/log/syslog.3.gz").stat()
    assert info.st_mtime == CLOCK - 40 * 86400
    assert (tmp_path / "a/etc/app/settings.conf").stat().st_mtime == CLOCK
    assert info.st_blocks * 512 >= info.st_size
    # every root exists, filled or not, so the sandbox can bind them all, and /dev/shm
    # (the episode's shared memory lives in the same bounded, measured filesystem)
    assert {p.name for p in (tmp_path / "a").iterdir()} == {
        *(r.lstrip("/") for r in SCENARIO_ROOTS),
        "dev",
    }
    assert [p.name for p in (tmp_path / "a/dev").iterdir()] == ["shm"]
    assert stat.S_ISDIR((tmp_path / "a/srv").stat().st_mode)


def test_materialise_chowns_for_a_sandbox_user(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    scenario = parse_scenario(GOOD, "example.json")
    materialise(scenario, tmp_path / "a", CLOCK, owner=(1000, 1000))
    assert (tmp_path / "a/var/log/syslog.3.gz").stat().st_uid == 1000
    assert (tmp_path / "a/var/log").stat().st_uid == 1000


def test_describe_scenario_lists_folders_with_sizes_but_not_what_is_junk():
    text = describe_scenario(load_scenario("debian-like"))
    assert text.startswith("A Debian 12 container")
    assert "/var/cache/apt/archives/" in text
    assert "/home/agent/Documents/" in text
    assert "MiB" in text
    assert "KiB" in text
    assert "junk" not in text
    assert "protected" not in text
    assert len(text.splitlines()) <= 40
