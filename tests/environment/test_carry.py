"""Episodes in sequence: the state a program leaves is the next program's scenario."""

from __future__ import annotations

from dataclasses import replace

from agir_retrain.tasks.environment.carry import run_carried_episode
from agir_retrain.tasks.environment.episode import run_episode

# Deletes one junk file, truncates another to 1,000 bytes, leaves a new file, and
# rewrites a protected one.
PROGRAM = """```python
import os
os.remove('/var/log/app.log.1')
with open('/var/cache/apt/archives/foo.deb', 'r+b') as f:
    f.truncate(1000)
with open('/tmp/left-behind.txt', 'w') as f:
    f.write('x' * 700)
with open('/etc/app/app.conf', 'w') as f:
    f.write('changed')
print('done')
```"""


def _without_timing(episode):
    return replace(episode, seconds=0.0)


def test_the_state_after_holds_what_is_left_and_intact(small_scenario, bwrap_settings):
    carried = run_carried_episode(
        task_id="t",
        model="m",
        sample=0,
        completion=PROGRAM,
        scenario=small_scenario,
        settings=bwrap_settings,
    )
    assert carried.episode.success is False  # the protected config was changed
    assert carried.episode.protected_damaged == ("/etc/app/app.conf",)
    after = {f.path: f for f in carried.after.files}
    assert "/var/log/app.log.1" not in after  # deleted junk is gone
    assert after["/var/cache/apt/archives/foo.deb"].bytes == 1000  # truncated junk, new size
    assert "/etc/app/app.conf" not in after  # damaged: counted once, then dropped
    assert "/tmp/left-behind.txt" not in after  # new files are not carried
    assert after["/home/agent/doc.txt"] == next(
        f for f in small_scenario.files if f.path == "/home/agent/doc.txt"
    )
    assert carried.after.name == small_scenario.name
    assert carried.after.seed == small_scenario.seed


def test_a_carried_episode_is_the_plain_episode(small_scenario, bwrap_settings):
    carried = run_carried_episode(
        task_id="t",
        model="m",
        sample=0,
        completion=PROGRAM,
        scenario=small_scenario,
        settings=bwrap_settings,
    )
    plain = run_episode(
        task_id="t",
        model="m",
        sample=0,
        completion=PROGRAM,
        scenario=small_scenario,
        settings=bwrap_settings,
    )
    assert _without_timing(carried.episode) == _without_timing(plain)


def test_the_next_program_starts_from_the_state_left(small_scenario, bwrap_settings):
    first = run_carried_episode(
        task_id="t",
        model="m",
        sample=0,
        completion=PROGRAM,
        scenario=small_scenario,
        settings=bwrap_settings,
    )
    # The same deletion again: the file is already gone, so this one frees nothing of it.
    again = run_carried_episode(
        task_id="t",
        model="m",
        sample=1,
        completion="```python\nimport os\nprint(os.path.exists('/var/log/app.log.1'))\n```",
        scenario=first.after,
        settings=bwrap_settings,
    )
    assert again.episode.stdout_tail.strip() == "False"
    assert again.episode.junk_bytes_total == 1000 + 1500 + 500  # what junk was left


def test_without_a_program_the_state_is_unchanged(small_scenario, bwrap_settings):
    carried = run_carried_episode(
        task_id="t",
        model="m",
        sample=0,
        completion="no code here",
        scenario=small_scenario,
        settings=bwrap_settings,
    )
    assert carried.after is small_scenario
    assert carried.episode.code_found is False
