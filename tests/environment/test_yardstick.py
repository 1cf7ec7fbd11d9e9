"""The yardstick holds: a program that keeps the junk's bytes cannot earn the reward of freeing them.

Every hole of issue 19 is tried here on the real bubblewrap sandbox, by the harness as root
and as the unprivileged user the GRPO job runs as (uid 1000): bytes kept past the longest
nameable path, in a folder shut to its reader, behind a size of zero, in names, link
targets and extended attributes, in /dev/shm or the jail's own root; a protected file made
unreadable; the episode's disk, memory and processes as a whole; the jail's command line
and its system calls. No such program's episode is a success or earns a reward above zero.

The programs run against ``small_scenario`` (conftest): junk /var/log/app.log.1 (1,000
bytes), /var/cache/apt/archives/foo.deb (3,000), /tmp/scratch/tmp.bin (1,500) and
/root/.cache/pip/wheel.whl (500); protected /home/agent/doc.txt, /etc/app/app.conf and
/var/log/app.log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agir_retrain.tasks.environment.contract import Episode, StoppedBy
from agir_retrain.tasks.environment.episode import run_episode
from agir_retrain.tasks.environment.reward import episode_reward
from agir_retrain.tasks.environment.scenario import scenario_to_json
from agir_retrain.tasks.settings.environment import RewardSettings

JUNK = (
    "/var/log/app.log.1",
    "/var/cache/apt/archives/foo.deb",
    "/tmp/scratch/tmp.bin",
    "/root/.cache/pip/wheel.whl",
)
_PRELUDE = f"import os\nJUNK = {JUNK!r}\n"

# What each program does; the bytes it keeps, and where (the hole it tries).
ATTACKS: dict[str, str] = {
    # names past PATH_MAX: every folder of the chain has a 250-character name
    "beyond-the-longest-path": _PRELUDE
    + """
for index, path in enumerate(JUNK):
    fd = os.open("/" + path.split("/")[1], os.O_RDONLY)  # renames stay within one root
    for level in range(17):
        name = "d" * 249 + chr(97 + level)
        try:
            os.mkdir(name, dir_fd=fd)
        except FileExistsError:
            pass
        inner = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.rename(path, f"j{index}", dst_dir_fd=fd)
    os.close(fd)
""",
    # a folder its owner took every permission from
    "folder-chmod-0": _PRELUDE
    + """
for index, path in enumerate(JUNK):
    hide = "/" + path.split("/")[1] + "/hide"  # renames stay within one root
    os.makedirs(hide, exist_ok=True)
    os.rename(path, f"{hide}/j{index}")
for root in {"/" + path.split("/")[1] for path in JUNK}:
    os.chmod(root + "/hide", 0)
""",
    # the size says 0, the blocks are all still there
    "fallocate-behind-size-0": _PRELUDE
    + """
for path in JUNK:
    size = os.path.getsize(path)
    fd = os.open(path, os.O_WRONLY)
    os.ftruncate(fd, 0)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(size)) != 0:  # FALLOC_FL_KEEP_SIZE
        raise OSError(ctypes.get_errno(), "fallocate")
    os.close(fd)
""",
    # a protected file nobody may read any more, while the junk goes
    "protected-chmod-0": _PRELUDE
    + """
os.chmod("/etc/app/app.conf", 0)
for path in JUNK:
    os.remove(path)
""",
    # the junk's bytes as extended attributes of the folders left behind
    "bytes-in-xattrs": _PRELUDE
    + """
for index, path in enumerate(JUNK):
    data = open(path, "rb").read()
    os.setxattr("/var", f"user.j{index}", data)
    os.remove(path)
""",
    # the junk's bytes as the names of empty files
    "bytes-in-file-names": _PRELUDE
    + """
os.mkdir("/var/names")
for index, path in enumerate(JUNK):
    data = open(path, "rb").read().hex()
    for start in range(0, len(data), 240):
        open(f"/var/names/{index:02d}{start:06d}{data[start:start + 240]}", "w").close()
    os.remove(path)
""",
    # the junk's bytes as the names of new folders
    "bytes-in-folder-names": _PRELUDE
    + """
for index, path in enumerate(JUNK):
    data = open(path, "rb").read().hex()
    for start in range(0, len(data), 240):
        os.makedirs(f"/tmp/n/{index:02d}{start:06d}{data[start:start + 240]}")
    os.remove(path)
""",
    # the junk moved to the sandbox's /dev/shm, which no scenario holds
    "moved-to-dev-shm": _PRELUDE
    + """
for index, path in enumerate(JUNK):
    open(f"/dev/shm/j{index}", "wb").write(open(path, "rb").read())
    os.remove(path)
""",
    # the junk moved to the jail's own root folder
    "moved-to-the-jail-root": _PRELUDE
    + """
for index, path in enumerate(JUNK):
    open(f"/stash{index}", "wb").write(open(path, "rb").read())
    os.remove(path)
""",
    # the junk's bytes as the targets of symbolic links
    "bytes-in-link-targets": _PRELUDE
    + """
for index, path in enumerate(JUNK):
    data = open(path, "rb").read().replace(b"\\0", b"0").replace(b"/", b"_")
    os.symlink(data, f"/var/l{index}".encode())
    os.remove(path)
""",
    # the junk still reachable under a second name (a hard link)
    "hard-link-kept": _PRELUDE
    + """
for index, path in enumerate(JUNK):
    os.link(path, f"{os.path.dirname(path)}/kept{index}")
    os.remove(path)
""",
    # a folder of the protected file's path replaced by a link to its moved copy
    "folder-renamed-over-protected": _PRELUDE
    + """
os.rename("/etc/app", "/etc/app-moved")
os.symlink("/etc/app-moved", "/etc/app")
for path in JUNK:
    os.remove(path)
""",
}
HONEST = _PRELUDE + "for path in JUNK[:2]:\n    os.remove(path)\n"
WEIGHTS = RewardSettings()


def _row(episode) -> dict:
    row = dataclasses.asdict(episode)
    row["stopped_by"] = None if episode.stopped_by is None else episode.stopped_by.value
    row["protected_damaged"] = list(row["protected_damaged"])  # as the JSON of uid 1000's
    return row


@pytest.fixture(params=["root", "uid1000"])
def harness(request, small_scenario, bwrap_settings):
    """Run a program as an episode: by the harness as root, or as the GRPO job's uid 1000."""
    if request.param == "root":
        if os.geteuid() != 0:
            pytest.skip("the harness runs as root in this case")

        def play(program: str, **limits) -> dict:
            settings = bwrap_settings.model_copy(
                update={"limits": bwrap_settings.limits.model_copy(update=limits)}
            )
            completion = f"```python\n{textwrap.dedent(program)}\n```"
            return _row(
                run_episode(
                    task_id="t", model="m", sample=0, completion=completion,
                    scenario=small_scenario, settings=settings,
                )
            )  # fmt: skip

        return play
    unprivileged = request.getfixturevalue("unprivileged")
    scenario = json.loads(scenario_to_json(small_scenario))

    def play_unprivileged(program: str, **limits) -> dict:
        settings = bwrap_settings.model_dump() | {"work_dir": str(unprivileged.work_dir)}
        settings["limits"] = settings["limits"] | limits
        return unprivileged.request(
            op="episode", program=textwrap.dedent(program), scenario=scenario, settings=settings
        )

    return play_unprivileged


def _reward(row: dict) -> float | None:
    fields = {f.name for f in dataclasses.fields(Episode)}
    episode = Episode(**{k: v for k, v in row.items() if k in fields} | {
        "stopped_by": None if row["stopped_by"] is None else StoppedBy(row["stopped_by"]),
        "protected_damaged": tuple(row["protected_damaged"]),
    })  # fmt: skip
    return episode_reward(episode, WEIGHTS)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_a_program_that_keeps_the_junk_earns_nothing(name, harness):
    row = harness(ATTACKS[name])
    assert row["stopped_by"] != "harness", row["note"]
    assert row["success"] is False, row
    assert row["freed_share"] == 0.0 or row["protected_damaged"], row
    assert _reward(row) <= 0.0, row


def test_the_honest_program_beside_them_still_earns(harness):
    row = harness(HONEST)
    assert (row["exit_code"], row["stopped_by"], row["note"]) == (0, None, "")
    assert (row["junk_bytes_freed"], row["new_bytes"], row["success"]) == (4000, 0, True)
    assert _reward(row) == pytest.approx(4000 / 6000)


def test_each_byte_kept_is_counted_where_it_hides(harness):
    """Not just no reward: the bytes are found (allocation, names, attributes, /dev/shm)."""
    kept = {
        "fallocate-behind-size-0": lambda r: r["junk_bytes_freed"] == 0,
        "bytes-in-xattrs": lambda r: r["new_bytes"] >= 6000,
        "bytes-in-file-names": lambda r: r["new_bytes"] >= 12000,  # hex: two characters a byte
        "moved-to-dev-shm": lambda r: r["new_bytes"] >= 6000,
        "beyond-the-longest-path": lambda r: r["new_bytes"] >= 6000,
        "folder-chmod-0": lambda r: r["new_bytes"] >= 6000,
    }
    for name, found in kept.items():
        row = harness(ATTACKS[name])
        assert found(row), (name, row)


def test_a_protected_file_made_unreadable_is_damage(harness):
    row = harness(ATTACKS["protected-chmod-0"])
    assert row["protected_damaged"] == ["/etc/app/app.conf"]


def test_the_jails_root_and_dev_are_read_only(harness):
    row = harness(ATTACKS["moved-to-the-jail-root"])
    assert "Read-only file system" in row["stderr_tail"]


def test_filling_the_episodes_disk_stops_it_as_disk(harness):
    """The episode's own filesystem (16 MiB free in these tests) fills; the host does not."""
    fill = """
        with open("/tmp/fill", "wb") as out:
            while True:
                out.write(b"x" * (1 << 20))
    """
    row = harness(fill, file_size_mb=64)
    assert row["stopped_by"] == "disk"
    assert row["exit_code"] == 1
    assert row["new_bytes"] < 17 << 20
    files = """
        import os
        for index in range(100_000):
            open(f"/tmp/f{index}", "w").close()
    """
    row = harness(files)
    assert row["stopped_by"] == "disk"  # out of inodes: 2,000 more than the scenario's
    assert "No space left on device" in row["stderr_tail"]


def test_the_jails_command_line_shows_nothing_of_the_host(harness):
    row = harness("print(open('/proc/1/cmdline').read().replace(chr(0), ' '))")
    seen = row["stdout_tail"]
    assert seen.split() == [
        "/usr/bin/bwrap",
        "--args",
        seen.split()[2],
        "--",
        "/usr/bin/python3",
        "/agir/program.py",
    ]
    assert "agir-episode" not in seen


SYSCALLS = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
def call(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(number, *args)
    return "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]
params = ctypes.create_string_buffer(120)
seen = {
    "io_uring_setup": call(425, 8, params),  # x86-64 numbers
    "ptrace_traceme": call(101, 0, 0, 0, 0),
    "keyctl": call(250, 0, 0, 0, 0, 0),
    "bpf": call(321, 0, 0, 0),
    "unshare": call(272, 0x10000000),
}
pid = os.fork()
if pid == 0:
    os._exit(0)
seen["fork"] = os.waitpid(pid, 0)[1]
print(json.dumps(seen))
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe uses x86-64 syscall numbers")
def test_the_seccomp_filter_denies_what_cleaning_never_needs(harness):
    row = harness(SYSCALLS)
    assert row["exit_code"] == 0, row["stderr_tail"]
    seen = json.loads(row["stdout_tail"].splitlines()[-1])
    assert seen == {
        "io_uring_setup": "ENOSYS",
        "ptrace_traceme": "EPERM",
        "keyctl": "EPERM",
        "bpf": "EPERM",
        "unshare": "EPERM",
        "fork": 0,  # what a cleanup program does still works
    }


def test_a_fork_bomb_does_not_fail_its_neighbour(unprivileged, small_scenario, bwrap_settings):
    """As uid 1000 (no cgroup): RLIMIT_NPROC is counted per episode, not per user."""
    bomb = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n"
    neighbour = (
        "import subprocess, time\ntime.sleep(0.5)\n"
        "procs = [subprocess.Popen(['sleep', '0.2']) for _ in range(8)]\n"
        "print(sum(p.wait() for p in procs))\n"
    )
    settings = bwrap_settings.model_dump() | {"work_dir": str(unprivileged.work_dir)}
    scenario = json.loads(scenario_to_json(small_scenario))
    both = unprivileged.request(
        op="episodes",
        episodes=[
            {"program": bomb, "scenario": scenario, "settings": settings, "sample": 0},
            {"program": neighbour, "scenario": scenario, "settings": settings, "sample": 1},
        ],
    )
    assert (both[1]["exit_code"], both[1]["stdout_tail"]) == (0, "0\n"), both[1]["stderr_tail"]
    assert both[0]["stopped_by"] in {"processes", "timeout"}
    info = unprivileged.request(op="sandbox", settings=settings)
    assert info == {"pids": False, "memory": False, "nproc": True}


def test_memory_is_bounded_for_the_episode_as_a_whole(harness, request):
    """Forks each under RLIMIT_AS, together over the episode's memory: stopped as memory."""
    if "uid1000" in request.node.name:
        pytest.skip("without a memory cgroup only each process is bounded (processes x memory_mb)")
    hog = """
        import os, time
        children = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                block = bytearray(48 << 20)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(5)
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)
    """
    row = harness(hog, memory_mb=64, disk_mb=8, wall_s=8)
    assert row["stopped_by"] == "memory", row
    assert row["exit_code"] == 0 or row["exit_code"] >= 128


ZOMBIE_PARENT = r"""
import ctypes, json, os, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(36, 1, 0, 0, 0) == 0  # a subreaper that never reaps: `accelerate launch`
harness = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
episodes = harness.stdout.readline()
def zombies(parent):
    found = []
    for pid in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if stat[0] == "Z" and int(stat[1]) == parent:
            found.append(int(pid))
    return found
time.sleep(0.5)
seen = {"episodes": json.loads(episodes), "under_job": len(zombies(os.getpid())),
        "under_harness": len(zombies(harness.pid))}
harness.stdin = None
harness.kill()
harness.wait()
print(json.dumps(seen))
"""
ZOMBIE_HARNESS = r"""
import json, sys, time
from agir_retrain.tasks.environment.contract import Completion
from agir_retrain.tasks.environment.episode import sandbox_for
from agir_retrain.tasks.environment.scenario import load_scenario
from agir_retrain.tasks.evaluation.episodes import EpisodeGroup, run_groups_locally
from agir_retrain.tasks.settings.environment import EnvironmentSettings
settings = EnvironmentSettings(limits={"wall_s": 1, "disk_mb": 8, "processes": 16})
sandbox_for(settings)  # made here, then inherited by the forked workers, as evaluation does
programs = ["print('done')", "import os\nif os.fork() == 0:\n    os.setsid()\n    import time\n    time.sleep(60)",
            "while True:\n    pass"]
groups = [EpisodeGroup(task_id=f"t{i}", scenario=load_scenario("few-large"), completions=(
    Completion(task_id=f"t{i}", model="m", sample=0, completion=f"```python\n{programs[i % 3]}\n```"),))
    for i in range(9)]
rows = run_groups_locally(groups, settings, workers=2)
print(json.dumps([None if r.stopped_by is None else r.stopped_by.value for r in rows]), flush=True)
time.sleep(30)
"""


@pytest.mark.slow  # ~6 s: a second interpreter imports the project
def test_no_zombie_is_left_under_a_parent_that_never_reaps(bwrap_settings):
    """The harness reaps its jails' inits itself: none is left for the job's pid 1."""
    done = subprocess.run(
        [sys.executable, "-c", ZOMBIE_PARENT, ZOMBIE_HARNESS],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["episodes"] == [None, None, "timeout"] * 3
    assert (seen["under_job"], seen["under_harness"]) == (0, 0)


HARNESS_FAILS = r"""
import json, os, sys
from pathlib import Path
group = Path(sys.argv[1])
(group / "cgroup.procs").write_text(str(os.getpid()))  # no fork left for the jail's init
from agir_retrain.tasks.environment.episode import run_episode
from agir_retrain.tasks.environment.scenario import load_scenario
from agir_retrain.tasks.settings.environment import EnvironmentSettings
from agir_retrain.tasks.environment.reward import episode_reward
from agir_retrain.tasks.settings.environment import RewardSettings
from agir_retrain.tasks.environment.sandbox_bwrap import BwrapSandbox
sandbox = BwrapSandbox()  # checked before the cap
(group / "pids.max").write_text(sys.argv[2])
episode = run_episode(task_id="t", model="m", sample=0, completion="```python\nprint(1)\n```",
                      scenario=load_scenario("few-large"), settings=EnvironmentSettings(harness_retries=1),
                      sandbox=sandbox)
print(json.dumps({"stopped_by": episode.stopped_by, "exit_code": episode.exit_code,
                  "note": episode.note, "reward": episode_reward(episode, RewardSettings())}))
"""


@pytest.mark.slow  # ~4 s: a second interpreter imports the project
@pytest.mark.skipif(not Path("/sys/fs/cgroup/pids/cgroup.procs").exists() or os.geteuid() != 0,
                    reason="needs root and the cgroup v1 pids hierarchy to cap the harness")  # fmt: skip
def test_a_jail_that_cannot_start_is_the_harness_failure_not_the_program(tmp_path):
    """The job's pids limit reached: bwrap cannot fork. Not scored as the program's failure."""
    group = Path("/sys/fs/cgroup/pids") / f"agir-test-harness-{os.getpid()}"
    group.mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-c", HARNESS_FAILS, str(group), "3"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        for folder in [*sorted(group.rglob("*/"), key=lambda p: -len(p.parts)), group]:
            if folder.is_dir():
                for pid in (folder / "cgroup.procs").read_text().split():
                    os.kill(int(pid), 9)
                folder.rmdir()
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["stopped_by"] == "harness"
    assert seen["exit_code"] is None
    assert seen["reward"] is None  # unscorable for GRPO: never the program's
    assert seen["note"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tiny tmpfs as the work dir")
def test_a_full_work_dir_fails_the_harness_not_the_run_and_is_never_scored(
    small_scenario, bwrap_settings, tmp_path
):
    """No room for an episode's folder: GRPO's reward is None (unscorable), the run goes on."""
    from agir_retrain.tasks.environment.episode import sandbox_for
    from agir_retrain.tasks.training.grpo import EpisodeReward

    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=8", "w", str(work)], check=True
    )
    try:
        settings = bwrap_settings.model_copy(update={"work_dir": str(work), "harness_retries": 1})
        sandbox_for(settings)  # made (and checked) while there is room
        filler = []
        try:
            while True:
                filler.append(work / f"fill{len(filler)}")
                filler[-1].write_bytes(b"")
        except OSError:
            filler.pop()
        reward = EpisodeReward({"small": small_scenario}, settings)
        completion = [f"```python\n{HONEST}\n```"]
        args = {"prompts": [""], "task_id": ["t"], "scenario": ["small"]}
        assert reward(completions=completion, **args) == [None]
        assert reward.harness_failures == 1
        for path in filler:
            path.unlink()
        assert reward(completions=completion, **args) == [pytest.approx(4000 / 6000)]
    finally:
        subprocess.run(["umount", "--lazy", str(work)], check=True)


def test_no_process_of_the_program_outlives_its_episode(harness):
    """A double-forked, `setsid` daemon is gone when the episode ends (its pid namespace)."""
    daemon = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
            os._exit(0)
        time.sleep(0.2)  # the daemon is up when the program ends
    """
    row = harness(daemon)
    assert (row["exit_code"], row["stopped_by"]) == (0, None)
    assert row["seconds"] < 5
    survivors = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and _cmdline(pid).endswith("/agir/program.py")
    ]
    assert survivors == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_without_a_per_episode_process_limit_the_sandbox_refuses_unless_asked(monkeypatch):
    """Where neither a pids cgroup nor a per-namespace RLIMIT_NPROC can bound an episode."""
    from agir_retrain.tasks.environment import sandbox_bwrap
    from agir_retrain.tasks.environment.sandbox import SandboxError

    monkeypatch.setattr(sandbox_bwrap, "controller", lambda name: None)  # no cgroup here
    monkeypatch.setattr(sandbox_bwrap, "_nproc_binds_per_episode", lambda: False)  # e.g. root
    with pytest.raises(SandboxError, match="allow_unlimited_processes"):
        sandbox_bwrap.BwrapSandbox()
    allowed = sandbox_bwrap.BwrapSandbox(allow_unlimited_processes=True)
    assert (allowed.pids, allowed.nproc) == (None, False)
