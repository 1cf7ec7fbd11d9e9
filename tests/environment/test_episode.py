"""Episodes: programs extracted from completions, and exact rows for hand-written programs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time

import orjson
import polars as pl
import pytest

from agir_retrain.tasks.environment.contract import EPISODE_SCHEMA, Episode, StoppedBy
from agir_retrain.tasks.environment.episode import extract_program, run_episode
from agir_retrain.tasks.environment.scenario import load_scenario

FREE_KNOWN_JUNK = """I will remove the old log and the cached package.
```python
import os
freed = 0
for path in ["/var/log/app.log.1", "/var/cache/apt/archives/foo.deb"]:
    freed += os.path.getsize(path)
    os.remove(path)
print("freed", freed)
```
Done."""

DELETE_PROTECTED = """```python
import os
os.remove("/var/log/app.log.1")
os.remove("/etc/app/app.conf")
```"""

LOOP_FOREVER = """```python
while True:
    pass
```"""

NO_CODE = "I would delete the rotated logs and the apt cache, then check the disk usage."

OLDER_THAN_30_DAYS = """```python
import os, time
now = time.time()
for folder, _dirs, files in os.walk("/var"):
    for name in files:
        path = os.path.join(folder, name)
        if now - os.path.getmtime(path) > 30 * 86400:
            os.remove(path)
```"""


@pytest.mark.parametrize(
    ("completion", "program"),
    [
        ("text\n```python\nprint(1)\n```\nmore", "print(1)\n"),
        ("```Python3\nx = 1\n```", "x = 1\n"),
        ("```py\nx = 1\n```", "x = 1\n"),
        ("```bash\nrm -rf /tmp\n```\n```python\nimport os\n```", "import os\n"),
        ("```python\nfirst()\n```\n```python\nsecond()\n```", "first()\n"),
        (
            "```\nimport shutil\nshutil.rmtree('/tmp/x')\n```",
            "import shutil\nshutil.rmtree('/tmp/x')\n",
        ),
        ("```\nrm -rf /tmp/x\n```", None),  # an untagged fence that is not Python
        ("```python\nimport os\nos.remove('/tmp/a')", "import os\nos.remove('/tmp/a')"),  # cut off
        ("import os\nos.remove('/var/log/a.1')\n", "import os\nos.remove('/var/log/a.1')\n"),
        ("Done.", None),
        ("Hello", None),  # parses as Python, but is a lone name
        ("", None),
        ("```python\n```", ""),
    ],
)
def test_extract_program(completion, program):
    assert extract_program(completion) == program


@pytest.mark.parametrize(
    "hostile",
    [
        "```" + " " * 16_000,
        "```\n" * 20_000,
        "```python" * 10_000,
        "(" * 100_000,
        "```\n" + "(" * 50_000 + "\n```",
    ],
)
def test_extract_program_is_fast_on_hostile_text(hostile):
    start = time.perf_counter()
    extract_program(hostile)
    assert time.perf_counter() - start < 1.0


def _row(episode: Episode) -> Episode:
    return dataclasses.replace(episode, seconds=0.0)


def _expected(**fields) -> Episode:
    base = {
        "task_id": "t",
        "model": "m",
        "sample": 0,
        "code_found": True,
        "exit_code": 0,
        "stopped_by": None,
        "junk_bytes_total": 6000,
        "junk_bytes_freed": 0,
        "new_bytes": 0,
        "protected_damaged": (),
        "freed_share": 0.0,
        "success": False,
        "seconds": 0.0,
        "stdout_tail": "",
        "stderr_tail": "",
        "scenario": "small",
        "backend": "bwrap",
    }
    return Episode(**{**base, **fields})


def _episode(completion, scenario, settings, sample=0):
    return run_episode(
        task_id="t",
        model="m",
        sample=sample,
        completion=completion,
        scenario=scenario,
        settings=settings,
    )


def test_a_program_that_frees_known_junk(small_scenario, bwrap_settings):
    episode = _episode(FREE_KNOWN_JUNK, small_scenario, bwrap_settings)
    assert _row(episode) == _expected(
        junk_bytes_freed=4000, freed_share=4000 / 6000, success=True, stdout_tail="freed 4000\n"
    )


def test_a_program_that_deletes_a_protected_file(small_scenario, bwrap_settings):
    episode = _episode(DELETE_PROTECTED, small_scenario, bwrap_settings)
    assert _row(episode) == _expected(
        junk_bytes_freed=1000, freed_share=1000 / 6000, protected_damaged=("/etc/app/app.conf",)
    )


def test_a_program_that_loops_forever(small_scenario, bwrap_settings):
    episode = _episode(LOOP_FOREVER, small_scenario, bwrap_settings)
    assert _row(episode) == _expected(exit_code=137, stopped_by=StoppedBy.TIMEOUT)
    assert episode.seconds >= bwrap_settings.limits.wall_s


def test_a_completion_with_no_code_runs_nothing(small_scenario, bwrap_settings):
    episode = _episode(NO_CODE, small_scenario, bwrap_settings)
    assert episode == _expected(code_found=False, exit_code=None)


def test_a_failing_program_keeps_its_error_tail(small_scenario, bwrap_settings):
    episode = _episode(
        "```python\nprint('x' * 5000)\nraise SystemExit('bad ' * 1000)\n```",
        small_scenario,
        bwrap_settings,
    )
    assert episode.exit_code == 1
    assert episode.stopped_by is None
    assert episode.stdout_tail == "x" * 1999 + "\n"  # the last 2,000 characters
    assert len(episode.stderr_tail) == 2000
    assert episode.stderr_tail.endswith("bad \n")


def test_older_than_n_days_sees_the_scenarios_ages(small_scenario, bwrap_settings):
    episode = _episode(OLDER_THAN_30_DAYS, small_scenario, bwrap_settings)
    assert episode.exit_code == 0, episode.stderr_tail
    assert episode.junk_bytes_freed == 1000  # only /var/log/app.log.1 is 40 days old
    assert episode.protected_damaged == ()


def test_episodes_are_independent_and_repeatable(bwrap_settings):
    scenario = load_scenario("debian-like")
    program = "```python\nimport glob, os\nfor p in glob.glob('/var/log/*.gz'): os.remove(p)\n```"
    first = _episode(program, scenario, bwrap_settings)
    again = _episode(program, scenario, bwrap_settings)  # a fresh copy, not the first's leftovers
    assert first.junk_bytes_freed > 0
    assert _row(first) == _row(again)


def test_episode_rows_fit_the_schema(small_scenario, bwrap_settings):
    rows = [
        _episode(FREE_KNOWN_JUNK, small_scenario, bwrap_settings),
        _episode(NO_CODE, small_scenario, bwrap_settings, sample=1),
    ]
    frame = pl.DataFrame([dataclasses.asdict(r) for r in rows], schema=EPISODE_SCHEMA)
    assert frame["exit_code"].to_list() == [0, None]
    assert frame["protected_damaged"].to_list() == [[], []]
    assert list(EPISODE_SCHEMA) == [f.name for f in dataclasses.fields(Episode)]
    assert orjson.loads(orjson.dumps(rows[0]))["stopped_by"] is None


def test_folders_of_dead_processes_are_swept(tmp_path):
    from agir_retrain.tasks.environment.episode import EPISODE_PREFIX, sweep_stale_episodes

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f"{EPISODE_PREFIX}{gone.pid}-abc"
    (stale / "root/var/log").mkdir(parents=True)
    (stale / "root/var/log/x").write_text("left behind")
    mine = tmp_path / f"{EPISODE_PREFIX}{os.getpid()}-def"
    mine.mkdir()
    assert sweep_stale_episodes(str(tmp_path)) == 1
    assert not stale.exists()
    assert mine.exists()  # a live process's episode is never touched
