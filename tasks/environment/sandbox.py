"""Run one program against a materialised scenario, isolated and limited.

A backend takes an episode folder (``root/`` holding the scenario's roots, ``program.py``)
and returns what happened: exit status, which limit stopped it, its output files. The
default backend is bubblewrap (``sandbox_bwrap``); docker (``sandbox_docker``) runs one
container per episode; ``PlainSandbox`` runs the program on the host with no isolation at
all and exists only as the benchmark's floor.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agir_retrain.tasks.environment.contract import StoppedBy
from agir_retrain.tasks.errors import AgirError

# The program's whole environment on every backend (bwrap adds PWD=/ itself; docker is given it)
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "HOSTNAME": "sandbox",
}
PROGRAM_PATH = "/agir/program.py"  # where the program lies inside the sandbox (read-only)
SANDBOX_UID = 1000  # the program's user inside, on every backend: it owns the scenario's files
TAIL_CHARS = 2000
_TAIL_BYTES = 4 * TAIL_CHARS + 4  # enough bytes for 2,000 characters of any UTF-8


class SandboxError(AgirError):
    """A sandbox backend cannot run here (missing tool, refused namespace, no engine)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxLimits:
    """What one program may use."""

    wall_s: float = 20.0
    memory_mb: int = 512
    processes: int = 64
    file_size_mb: int = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxResult:
    """What a backend saw of one run; the output itself lies in the episode folder's files."""

    exit_code: int  # 128 + signal number when a signal ended it (as a shell or docker says)
    stopped_by: StoppedBy | None
    seconds: float
    stdout_tail: str
    stderr_tail: str


class Sandbox(Protocol):
    """A way to run a program against ``episode/root`` as the scenario's machine."""

    name: str
    owner: tuple[int, int] | None  # who must own the scenario's files on the host

    def run(self, episode: Path, limits: SandboxLimits) -> SandboxResult:
        """Run ``episode/program.py`` with ``episode/root/<r>`` as ``/<r>``; outputs to ``episode``."""
        ...


def read_tail(path: Path) -> str:
    """The last 2,000 characters of a file the program wrote (bytes decoded as UTF-8)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - _TAIL_BYTES))
            data = handle.read(_TAIL_BYTES)
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace")[-TAIL_CHARS:]


def exit_status(returncode: int) -> int:
    """A Popen return code as a shell would report it (a signal N gives 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def classify(
    exit_code: int,
    stderr_tail: str,
    *,
    timed_out: bool,
    processes_hit: bool | None,
    memory_hit: bool = False,
) -> StoppedBy | None:
    """Say which limit stopped the program, if any.

    ``processes_hit``: the pids controller refused a fork (None when there is no such
    counter; then a refused fork is recognised from its error text). A limit only counts as
    the stop when the program did not finish cleanly, except a refused fork that ends in a
    timeout, which is a fork bomb.
    """
    if processes_hit and (timed_out or exit_code != 0):
        return StoppedBy.PROCESSES
    if timed_out:
        return StoppedBy.TIMEOUT
    if exit_code == 0:
        return None
    last = stderr_tail.rstrip().rsplit("\n", 1)[-1]
    if exit_code == 128 + signal.SIGXFSZ or "[Errno 27] File too large" in stderr_tail:
        return StoppedBy.FILE_SIZE
    if (
        memory_hit
        or last.startswith("MemoryError")
        or "Cannot allocate memory" in last
        or "std::bad_alloc" in stderr_tail
    ):
        return StoppedBy.MEMORY
    if processes_hit is None and (
        "[Errno 11] Resource temporarily unavailable" in stderr_tail
        or last.startswith("BlockingIOError")
    ):
        return StoppedBy.PROCESSES
    return None


def set_rlimits(limits: SandboxLimits, *, nproc: int | None) -> None:
    """Apply the limits a process and its children inherit (called between fork and exec).

    ``nproc``: the RLIMIT_NPROC to set (None: none), which counts every task of the user.
    """
    memory = limits.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = limits.file_size_mb << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not drop a core on the host
    if nproc is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def wait_or_kill(
    process: subprocess.Popen[bytes],
    wall_s: float,
    *,
    kill: Callable[[], None] | None = None,
    grace_s: float = 0.0,
) -> bool:
    """Wait for the process; past the deadline stop it. True when it timed out.

    The deadline is ``wall_s + grace_s`` (grace: a backend's own start-up). ``kill`` stops
    what the process runs (a container); by default, and if that fails, its whole session
    is killed. Waits on a pidfd: ``Popen.wait(timeout=...)`` polls with sleeps of up to
    50 ms, which would cost every episode ~25 ms on average.
    """
    deadline = wall_s + grace_s
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: fall back to polling
        try:
            process.wait(timeout=deadline)
            return False
        except subprocess.TimeoutExpired:
            pass
    else:
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            exited = bool(poller.poll(deadline * 1000))
        finally:
            os.close(pidfd)
        if exited:
            process.wait()
            return False
    if kill is not None:
        kill()
        try:
            process.wait(timeout=30)
            return True
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    return True


class PlainSandbox:
    """Run the program with the host's python in the episode folder: NO isolation.

    Only the benchmark uses it, as the floor, with programs that find their files under
    ``$SCENARIO_ROOT``; never a model's program, and no setting selects it.
    """

    name = "plain"
    owner = None

    def __init__(self, interpreter: str, *, i_know_this_is_unsafe: bool = False) -> None:
        if not i_know_this_is_unsafe:
            raise SandboxError("the plain backend has no isolation; only the benchmark uses it")
        self.interpreter = interpreter

    def run(self, episode: Path, limits: SandboxLimits) -> SandboxResult:
        """Run ``episode/program.py`` on the host, with ``SCENARIO_ROOT`` naming ``episode/root``."""
        start = time.monotonic()
        with (
            open(episode / "stdout", "wb") as out,
            open(episode / "stderr", "wb") as err,
        ):
            process = subprocess.Popen(
                [self.interpreter, str(episode / "program.py")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=episode,
                env={**SANDBOX_ENV, "SCENARIO_ROOT": str(episode / "root")},
                start_new_session=True,
            )
            timed_out = wait_or_kill(process, limits.wall_s)
        seconds = time.monotonic() - start
        code = exit_status(process.returncode)
        stderr = read_tail(episode / "stderr")
        return SandboxResult(
            exit_code=code,
            stopped_by=classify(code, stderr, timed_out=timed_out, processes_hit=None),
            seconds=seconds,
            stdout_tail=read_tail(episode / "stdout"),
            stderr_tail=stderr,
        )
