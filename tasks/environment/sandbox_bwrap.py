"""The bubblewrap backend: a light local jail per episode.

The program gets its own user, pid, mount, network, ipc, uts and cgroup namespaces; it
sees the host's ``/usr`` read-only (the ``/lib``, ``/bin`` links point into it), a fresh
``/proc`` and ``/dev``, the scenario's roots writable, and nothing else of the host. It runs
as uid 1000, which the namespace maps onto the host user who owns the scenario copy, with
no capabilities and an environment of PATH, HOME and LANG only. Memory and file size are
rlimits; processes are a pids cgroup when one can be made (root with cgroup v1 pids, as
here), else RLIMIT_NPROC (which binds only a non-root host user); wall time kills the
whole session, and the pid namespace takes every process with it.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path

from agir_retrain.tasks.environment.sandbox import (
    PROGRAM_PATH,
    SANDBOX_ENV,
    SANDBOX_UID,
    SandboxError,
    SandboxLimits,
    SandboxResult,
    classify,
    exit_status,
    read_tail,
    set_rlimits,
    wait_or_kill,
)
from agir_retrain.tasks.environment.scenario import SCENARIO_ROOTS

log = logging.getLogger(__name__)

_PIDS_V1 = Path("/sys/fs/cgroup/pids")
DEV_SHM_BYTES = 64 << 20  # as docker's default --shm-size
_counter = itertools.count()


@cache
def pids_cgroup_parent() -> Path | None:
    """A cgroup v1 pids folder this process may create children in, or None."""
    parent = _PIDS_V1 / "agir-sandbox"
    try:
        parent.mkdir(exist_ok=True)
        probe = parent / f"probe-{os.getpid()}"
        probe.mkdir()
        (probe / "pids.max").write_text("8")
        probe.rmdir()
    except OSError as exc:
        log.info("no pids cgroup (%s); processes are limited by RLIMIT_NPROC", exc)
        return None
    for stale in parent.glob("ep-*"):  # left by a process killed mid-episode
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                stale.rmdir()  # fails, harmlessly, while a process is still inside
            except OSError:
                pass
    return parent


class _PidsCgroup:
    """One episode's pids cgroup: a process cap, a count of refused forks, a kill switch."""

    def __init__(self, parent: Path, limit: int) -> None:
        self.path = parent / f"ep-{os.getpid()}-{next(_counter)}"
        self.path.mkdir()
        (self.path / "pids.max").write_text(str(limit))
        self.procs = str(self.path / "cgroup.procs")

    def add(self, pid: int) -> None:
        """Move a process in; its later children are born in it."""
        fd = os.open(self.procs, os.O_WRONLY)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)

    def refused_forks(self) -> int:
        for line in (self.path / "pids.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
        return 0

    def kill_and_remove(self) -> None:
        """Kill whatever is left in the cgroup, then remove it (bounded: a few seconds)."""
        deadline = time.monotonic() + 10
        while True:
            pids = [int(p) for p in Path(self.procs).read_text().split()]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                log.warning("processes %s outlived their episode's cgroup %s", pids, self.path)
                return
            time.sleep(0.01)
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except OSError:  # the last process is still being reaped
                time.sleep(0.01)
        log.warning("could not remove cgroup %s", self.path)


def bwrap_command(episode: Path, interpreter: str, extra: list[str] | None = None) -> list[str]:
    """The bwrap command line that runs ``episode/program.py`` against ``episode/root``."""
    binary = shutil.which("bwrap")
    if binary is None:
        raise SandboxError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    args = [
        binary,
        "--unshare-all",  # user, pid, net, ipc, uts, cgroup (net: not even the host's loopback)
        "--unshare-user",  # --unshare-all only tries; we require it
        "--disable-userns",  # no nested user namespace to regain capabilities in
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        "sandbox",
        *(extra or []),
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for link in ("lib", "lib64", "bin", "sbin"):
        if Path(f"/{link}").is_symlink():
            args += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    # /dev is a tmpfs in RAM, outside RLIMIT_AS and outside the measured copy: make it
    # read-only, with a /dev/shm (POSIX semaphores, multiprocessing) of docker's default size
    args += ["--size", str(DEV_SHM_BYTES), "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    for folder in SCENARIO_ROOTS:
        args += ["--bind", str(episode / "root" / folder.lstrip("/")), folder]
    args += ["--ro-bind", str(episode / "program.py"), PROGRAM_PATH, "--clearenv"]
    for key, value in SANDBOX_ENV.items():
        args += ["--setenv", key, value]
    args += ["--chdir", "/", "--", interpreter, PROGRAM_PATH]
    return args


class BwrapSandbox:
    """Run programs in bubblewrap (see the module docstring for what is isolated)."""

    name = "bwrap"
    owner = None  # the host user that runs bwrap owns the copy; inside it is uid 1000

    def __init__(self, interpreter: str = "/usr/bin/python3") -> None:
        if not interpreter.startswith("/usr/"):
            raise SandboxError(
                f"interpreter {interpreter!r} is not under /usr, the only host folder the "
                "sandbox shows; use e.g. /usr/bin/python3"
            )
        if not os.access(interpreter, os.X_OK):
            raise SandboxError(f"interpreter {interpreter!r} is not an executable file here")
        self.interpreter = interpreter
        self.cgroups = pids_cgroup_parent()
        self.prlimit = shutil.which("prlimit")
        _check_bwrap(interpreter)

    def run(self, episode: Path, limits: SandboxLimits) -> SandboxResult:
        """Run ``episode/program.py`` in a fresh jail; outputs go to ``episode/stdout|stderr``.

        bwrap starts blocked (``--block-fd``) and says its child's pid (``--info-fd``); the
        child joins the episode's pids cgroup before anything of the program runs. Limits
        come from ``prlimit`` in front of bwrap, so no Python runs between fork and exec
        (a ``preexec_fn`` forces a full fork of this process: ~25 ms an episode).
        """
        cgroup = _PidsCgroup(self.cgroups, limits.processes) if self.cgroups else None
        nproc = None if cgroup is not None else nproc_limit(limits.processes)
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        command = bwrap_command(
            episode, self.interpreter, extra=["--info-fd", str(info_w), "--block-fd", str(block_r)]
        )
        preexec = None
        if self.prlimit is not None:
            command = [*prlimit_prefix(self.prlimit, limits, nproc=nproc), *command]
        else:

            def preexec() -> None:
                set_rlimits(limits, nproc=nproc)

        start = time.monotonic()
        try:
            with (
                open(episode / "stdout", "wb") as out,
                open(episode / "stderr", "wb") as err,
            ):
                try:
                    process = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        env={},
                        cwd="/",
                        start_new_session=True,
                        pass_fds=(info_w, block_r),
                        preexec_fn=preexec,  # only where prlimit is missing
                    )
                finally:
                    os.close(info_w)
                    os.close(block_r)
                child = _read_child_pid(info_r)
                try:
                    if child is None:
                        raise OSError("bwrap gave no child pid")
                    if cgroup is not None:
                        cgroup.add(child)
                except OSError as exc:  # never release a jail that is not fully set up
                    wait_or_kill(process, 0)
                    raise SandboxError(
                        f"bubblewrap did not start ({exc}): {read_tail(episode / 'stderr')[-300:]}"
                    ) from exc
                try:
                    os.write(block_w, b"go")
                except BrokenPipeError:  # bwrap failed before blocking; its stderr says why
                    pass
                os.close(block_w)
                block_w = -1
                timed_out = wait_or_kill(process, limits.wall_s)
            seconds = time.monotonic() - start
            refused = cgroup.refused_forks() if cgroup is not None else None
        finally:
            os.close(info_r)
            if block_w != -1:
                os.close(block_w)
            if cgroup is not None:
                cgroup.kill_and_remove()
        code = exit_status(process.returncode)
        stderr = read_tail(episode / "stderr")
        return SandboxResult(
            exit_code=code,
            stopped_by=classify(
                code,
                stderr,
                timed_out=timed_out,
                processes_hit=None if refused is None else refused > 0,
            ),
            seconds=seconds,
            stdout_tail=read_tail(episode / "stdout"),
            stderr_tail=stderr,
        )


def prlimit_prefix(prlimit: str, limits: SandboxLimits, *, nproc: int | None) -> list[str]:
    """``prlimit`` arguments setting the limits ``set_rlimits`` sets, then exec'ing the rest."""
    memory, size = limits.memory_mb << 20, limits.file_size_mb << 20
    args = [prlimit, f"--as={memory}", f"--fsize={size}", "--core=0"]
    if nproc is not None:
        args.append(f"--nproc={nproc}")
    return [*args, "--"]


def nproc_limit(processes: int) -> int | None:
    """RLIMIT_NPROC giving a sandbox ``processes`` tasks, or None where it cannot bind.

    The limit counts every task (thread) of the host user, the caller's own included, so
    it is that count now plus the sandbox's share (and bwrap's two). It never binds uid 0:
    then there is no process limit but the wall time (logged once).
    """
    uid = os.getuid()
    if uid == 0:
        _warn_no_process_limit()
        return None
    tasks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            tasks += len(os.listdir(f"/proc/{entry.name}/task"))
        except OSError:  # it ended while we looked
            continue
    return tasks + processes + 2


@cache
def _warn_no_process_limit() -> None:
    log.warning(
        "no pids cgroup and running as root, where RLIMIT_NPROC does not bind: sandboxed "
        "programs have no process limit but the wall time"
    )


def _read_child_pid(info_r: int, timeout_s: float = 30.0) -> int | None:
    """The host pid of bwrap's sandbox child, from its ``--info-fd`` JSON (None if it failed)."""
    data = b""
    deadline = time.monotonic() + timeout_s
    poller = select.poll()
    poller.register(info_r, select.POLLIN)
    while b"}" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            return None
        chunk = os.read(info_r, 4096)
        if not chunk:
            return None
        data += chunk
    try:
        return int(json.loads(data[: data.index(b"}") + 1])["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


@cache
def _check_bwrap(interpreter: str) -> None:
    """Run one trivial program in the jail, once per process, so a broken setup fails loudly."""
    with tempfile.TemporaryDirectory(prefix="agir-bwrap-check-") as folder:
        episode = Path(folder)
        for root in SCENARIO_ROOTS:
            (episode / "root" / root.lstrip("/")).mkdir(parents=True)
        (episode / "program.py").write_text("print('ok')\n")
        try:
            done = subprocess.run(
                bwrap_command(episode, interpreter),
                capture_output=True,
                env={},
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxError(f"bubblewrap could not run: {exc}") from exc
        if done.returncode != 0 or done.stdout.strip() != b"ok":
            raise SandboxError(
                f"bubblewrap cannot run a program here (exit {done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()[-300:]}"
            )
