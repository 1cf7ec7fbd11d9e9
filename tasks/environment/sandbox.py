"""Run one program against a fresh scenario copy, isolated and limited: the backends' contract.

A backend opens a *session* per episode: a bounded filesystem for the copy (``session.root``,
a folder descriptor the caller fills and, after ``run``, measures), then runs the program
once. When ``run`` returns, every process of the episode is gone, so the copy holds still
while it is measured; leaving the session frees the copy. The default backend is bubblewrap
(``sandbox_bwrap``); docker (``sandbox_docker``) runs one container per episode;
``PlainSandbox`` runs the program on the host with no isolation at all and exists only as
the benchmark's floor. A session that cannot start or finish raises ``HarnessError``: the
episode is then the harness's failure, never the program's.
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
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
EPISODE_PREFIX = "agir-episode-"  # an episode's folder in the work dir, then the maker's pid
_TAIL_BYTES = 4 * TAIL_CHARS + 4  # enough bytes for 2,000 characters of any UTF-8
_PR_SET_CHILD_SUBREAPER = 36


class SandboxError(AgirError):
    """A sandbox backend cannot run here (missing tool, refused namespace, no engine)."""


class HarnessError(AgirError):
    """One episode's sandbox could not start or finish: the harness's failure, not the program's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxLimits:
    """What one episode may use. ``disk_bytes`` and ``inodes`` size its whole filesystem."""

    wall_s: float = 20.0
    memory_mb: int = 512
    processes: int = 64
    file_size_mb: int = 64
    disk_bytes: int = 256 << 20
    inodes: int = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxResult:
    """What a backend saw of one run of the program."""

    exit_code: int  # 128 + signal number when a signal ended it (as a shell or docker says)
    stopped_by: StoppedBy | None
    seconds: float
    stdout_tail: str
    stderr_tail: str


class SandboxSession(Protocol):
    """One episode: its filesystem (``root``, filled by the caller), then one run."""

    root: int  # descriptor of the copy's root folder (holding var/, tmp/, ..., dev/shm/)
    owner: tuple[int, int]  # who the copy's files must belong to (uid, gid)
    whole_filesystem: bool  # root is a filesystem of its own, holding only the copy

    def run(self) -> SandboxResult:
        """Run the program once; on return no process of the episode is left."""
        ...


class Sandbox(Protocol):
    """A way to run a program against a scenario copy as the scenario's machine."""

    name: str

    def session(
        self, program: str, limits: SandboxLimits
    ) -> AbstractContextManager[SandboxSession]:
        """Open one episode's session (its filesystem is freed when the context ends)."""
        ...


def output_file(name: str) -> int:
    """A memory file for the program's stdout or stderr (RLIMIT_FSIZE caps what it takes)."""
    return os.memfd_create(f"agir-{name}", os.MFD_CLOEXEC)


def read_tail(source: Path | int) -> str:
    """The last 2,000 characters of a file the program wrote (bytes decoded as UTF-8)."""
    try:
        fd = source if isinstance(source, int) else os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return ""
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, _TAIL_BYTES, max(0, size - _TAIL_BYTES))
    finally:
        if not isinstance(source, int):
            os.close(fd)
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
    disk_full: bool = False,
) -> StoppedBy | None:
    """Say which limit stopped the program, if any.

    ``processes_hit``: the pids controller refused a fork (None when there is no such
    counter; then a refused fork is recognised from its error text). ``memory_hit``: the
    episode's memory group killed a process. ``disk_full``: the episode's filesystem has no
    byte or inode left. A limit only counts as the stop when the program did not finish
    cleanly, except a refused fork that ends in a timeout (a fork bomb), a process the memory
    group killed, and a full disk: those are the episode's, whatever its program then did.
    """
    if processes_hit and (timed_out or exit_code != 0):
        return StoppedBy.PROCESSES
    if memory_hit:  # the episode's memory group killed one of its processes
        return StoppedBy.MEMORY
    if disk_full:
        return StoppedBy.DISK
    if timed_out:
        return StoppedBy.TIMEOUT
    if exit_code == 0:
        return None
    last = stderr_tail.rstrip().rsplit("\n", 1)[-1]
    if exit_code == 128 + signal.SIGXFSZ or "[Errno 27] File too large" in stderr_tail:
        return StoppedBy.FILE_SIZE
    if (
        last.startswith("MemoryError")
        or "Cannot allocate memory" in last
        or "std::bad_alloc" in stderr_tail
    ):
        return StoppedBy.MEMORY
    if processes_hit is None and (
        "[Errno 11] Resource temporarily unavailable" in stderr_tail
        or last.startswith("BlockingIOError")
    ):
        return StoppedBy.PROCESSES
    if "[Errno 28] No space left on device" in stderr_tail:
        return StoppedBy.DISK
    return None


def wait_or_kill(
    process: subprocess.Popen[bytes],
    wall_s: float,
    *,
    kill: Callable[[], None] | None = None,
    grace_s: float = 0.0,
) -> bool:
    """Wait for the process; past the deadline stop it. True when it timed out.

    The deadline is ``wall_s + grace_s`` (grace: a backend's own start-up). ``kill`` stops
    what the process runs (a container, a jail); by default, and if that fails, its whole
    session is killed. Waits on a pidfd: ``Popen.wait(timeout=...)`` polls with sleeps of up
    to 50 ms, which would cost every episode ~25 ms on average.
    """
    deadline = wall_s + grace_s
    if wait_pid(process.pid, deadline):
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


def wait_pid(pid: int | None, timeout_s: float, pidfd: int | None = None) -> bool:
    """Wait until a process has ended (its pidfd readable); False at the timeout.

    A process that no longer exists has ended. Without pidfds (Linux < 5.3), polls.
    """
    if pidfd is None:
        try:
            pidfd = os.pidfd_open(pid)  # type: ignore[arg-type]
        except ProcessLookupError:
            return True
        except (AttributeError, OSError):
            return _poll_until_gone(pid, timeout_s)
        try:
            return wait_pid(pid, timeout_s, pidfd)
        finally:
            os.close(pidfd)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout_s) * 1000))


def filesystem_full(root: int) -> bool:
    """True when the filesystem of ``root`` has (almost) no byte or no inode left."""
    fs = os.fstatvfs(root)
    return fs.f_bavail * fs.f_frsize < 2 * fs.f_frsize or fs.f_favail == 0


def _poll_until_gone(pid: int | None, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid is not None and Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


_subreaper: dict[int, bool] = {}  # pid -> set: a forked child does not inherit the setting


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (once a process; False if refused).

    bubblewrap's outer process may exit before the jail's init has been reaped; that init
    is then reparented to the nearest subreaper (this process, which reaps it: ``reap``),
    not to the machine's pid 1, which in a container may never reap (``accelerate launch``).
    Called at every session: a worker forked from a process that already was one is not.
    """
    pid = os.getpid()
    if pid not in _subreaper:
        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper[pid] = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return _subreaper[pid]


def reap(pid: int) -> None:
    """Collect ``pid`` if it is an ended child of this process (an orphan reparented here)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not ours: its own parent reaped it
        pass


def remove_tree(path: Path) -> None:
    """Remove a host folder however a program left it (deep, shut folders, odd names)."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except (OSError, RecursionError):
        pass
    for command in (
        ["chmod", "-R", "u+rwx", str(path)],
        ["rm", "-rf", "--one-file-system", str(path)],
    ):
        subprocess.run(command, check=False, timeout=300, capture_output=True)


class PlainSandbox:
    """Run the program with the host's python in a host folder: NO isolation, NO bounds.

    Only the benchmark uses it, as the floor, with programs that find their files under
    ``$SCENARIO_ROOT``; never a model's program, and no setting selects it.
    """

    name = "plain"

    def __init__(
        self, interpreter: str, *, work_dir: str | None = None, i_know_this_is_unsafe: bool = False
    ) -> None:
        if not i_know_this_is_unsafe:
            raise SandboxError("the plain backend has no isolation; only the benchmark uses it")
        self.interpreter = interpreter
        self.work_dir = work_dir or tempfile.gettempdir()

    @contextmanager
    def session(self, program: str, limits: SandboxLimits) -> Iterator[_PlainSession]:
        """A host folder for the copy; removed when the context ends."""
        folder = Path(tempfile.mkdtemp(prefix="agir-plain-", dir=self.work_dir))
        try:
            (folder / "root").mkdir()
            (folder / "program.py").write_text(program, encoding="utf-8", errors="surrogatepass")
            root = os.open(folder / "root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                yield _PlainSession(self.interpreter, folder, root, limits)
            finally:
                os.close(root)
        finally:
            remove_tree(folder)


class _PlainSession:
    whole_filesystem = False

    def __init__(self, interpreter: str, folder: Path, root: int, limits: SandboxLimits) -> None:
        self.interpreter, self.folder, self.root, self.limits = interpreter, folder, root, limits
        self.owner = (os.geteuid(), os.getegid())

    def run(self) -> SandboxResult:
        start = time.monotonic()
        out, err = output_file("stdout"), output_file("stderr")
        try:
            process = subprocess.Popen(
                [self.interpreter, str(self.folder / "program.py")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.folder,
                env={**SANDBOX_ENV, "SCENARIO_ROOT": str(self.folder / "root")},
                start_new_session=True,
            )
            timed_out = wait_or_kill(process, self.limits.wall_s)
            code = exit_status(process.returncode)
            stderr = read_tail(err)
            return SandboxResult(
                exit_code=code,
                stopped_by=classify(code, stderr, timed_out=timed_out, processes_hit=None),
                seconds=time.monotonic() - start,
                stdout_tail=read_tail(out),
                stderr_tail=stderr,
            )
        finally:
            os.close(out)
            os.close(err)
