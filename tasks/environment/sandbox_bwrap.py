"""The bubblewrap backend: a light local jail per episode, on a filesystem of its own.

Each episode starts as ``unshare --user --map-root-user --mount sh``: in that private user
and mount namespace a tmpfs bounded in bytes and inodes (``limits.disk_bytes``,
``limits.inodes``) is mounted on an empty folder of the work dir, the scenario's roots and
``dev/shm`` made in it, and ``bwrap`` started there (through ``prlimit``). The harness opens
that filesystem through ``/proc/<pid>/root`` while bwrap waits on ``--block-fd``, writes the
scenario copy into it, and lets the program go; after every process is gone it measures the
filesystem through the same descriptor, and closing that descriptor frees it all. Nothing of
the copy ever lies in the work dir, and a harness killed mid-episode leaves only an empty
folder.

The program gets its own user, pid, mount, network, ipc, uts and cgroup namespaces; it sees
the host's ``/usr`` read-only (``/lib``, ``/bin`` link into it), a fresh ``/proc``, a
read-only ``/dev`` whose ``/dev/shm`` is the episode filesystem's, the scenario's roots
writable, its program at ``/agir/program.py``, and a read-only root: nothing else is
writable and nothing else of the host is there. It runs as uid 1000 (the harness's own uid
outside), with no capabilities, a seccomp filter (``seccomp.py``) and an environment of
PATH, HOME, LANG and HOSTNAME only. bwrap's arguments come through a descriptor
(``--args``), so the jail's ``/proc/1/cmdline`` names nothing of the host.

Limits: wall time (the jail's init is killed, and the pid namespace with it); RLIMIT_AS and
RLIMIT_FSIZE per process; the episode's processes and memory as a whole by cgroups
(``cgroups.py``: v1 or v2) where they can be made; else processes by RLIMIT_NPROC, which
the kernel (5.14+) counts per user namespace, so it binds this episode alone; where neither
can bound processes, the sandbox refuses to start unless told otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agir_retrain.tasks.environment.cgroups import EpisodeGroups, controller
from agir_retrain.tasks.environment.contract import SCENARIO_ROOTS
from agir_retrain.tasks.environment.sandbox import (
    EPISODE_PREFIX,
    PROGRAM_PATH,
    SANDBOX_ENV,
    SANDBOX_UID,
    HarnessError,
    SandboxError,
    SandboxLimits,
    SandboxResult,
    become_subreaper,
    classify,
    exit_status,
    filesystem_full,
    output_file,
    read_tail,
    reap,
    wait_or_kill,
    wait_pid,
)
from agir_retrain.tasks.environment.seccomp import filter_program

log = logging.getLogger(__name__)

FOLDERS = " ".join(r.lstrip("/") for r in SCENARIO_ROOTS) + " dev/shm"
# Runs in the episode's private user and mount namespace, then becomes prlimit, then bwrap.
MOUNT_SCRIPT = (
    'set -e; mount -t tmpfs -o "$2" agir-episode "$1"; cd "$1"; '
    f'mkdir -p {FOLDERS}; shift 2; exec "$@"'
)
TOOLS = ("bwrap", "unshare", "mount", "prlimit", "sh")
NPROC_PER_USERNS_KERNEL = (5, 14)  # RLIMIT_NPROC counted per user namespace from here on
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class BwrapSandbox:
    """Run programs in bubblewrap (see the module docstring for what is isolated)."""

    name = "bwrap"

    def __init__(
        self,
        interpreter: str = "/usr/bin/python3",
        *,
        work_dir: str | None = None,
        allow_unlimited_processes: bool = False,
    ) -> None:
        if not interpreter.startswith("/usr/"):
            raise SandboxError(
                f"interpreter {interpreter!r} is not under /usr, the only host folder the "
                "sandbox shows; use e.g. /usr/bin/python3"
            )
        if not os.access(interpreter, os.X_OK):
            raise SandboxError(f"interpreter {interpreter!r} is not an executable file here")
        self.interpreter = interpreter
        self.work_dir = work_dir or tempfile.gettempdir()
        self.tools = _tools()
        self.seccomp = filter_program()
        self.pids, self.memory = controller("pids"), controller("memory")
        self.nproc = self.pids is None and _nproc_binds_per_episode()
        if self.pids is None and not self.nproc:
            if not allow_unlimited_processes:
                raise SandboxError(
                    "no per-episode process limit can be set here (no pids cgroup this process "
                    "may make, v1 or v2, and RLIMIT_NPROC binds neither root nor a kernel "
                    "before 5.14); set environment.allow_unlimited_processes to run anyway"
                )
            log.warning("sandboxed programs have no process limit but the wall time")
        become_subreaper()
        _check_runs(self)

    @contextmanager
    def session(self, program: str, limits: SandboxLimits) -> Iterator[_Jail]:
        """Mount the episode's filesystem, start the jail (held before the program), yield it."""
        try:
            mount_point = Path(
                tempfile.mkdtemp(prefix=f"{EPISODE_PREFIX}{os.getpid()}-", dir=self.work_dir)
            )
        except OSError as exc:  # a full work dir: this episode's failure, not the run's
            raise HarnessError(f"no episode folder in {self.work_dir}: {exc}") from exc
        become_subreaper()  # in this process: a forked worker does not inherit it
        jail = _Jail(self, program, limits, mount_point)
        try:
            try:
                jail.start()
            except OSError as exc:
                raise HarnessError(f"the jail could not start: {exc}") from exc
            yield jail
        finally:
            jail.close()
            try:
                mount_point.rmdir()
            except OSError as exc:
                log.warning("could not remove the episode folder %s: %s", mount_point, exc)


class _Jail:
    """One episode's namespaces, filesystem and processes (a ``SandboxSession``)."""

    whole_filesystem = True

    def __init__(
        self, sandbox: BwrapSandbox, program: str, limits: SandboxLimits, mount_point: Path
    ) -> None:
        self.sandbox, self.program, self.limits = sandbox, program, limits
        self.mount_point = mount_point
        self.owner = (os.geteuid(), os.getegid())
        self.root = -1
        self.process: subprocess.Popen[bytes] | None = None
        self.child: int | None = None  # the jail's init (host pid)
        self.child_fd = -1
        self.fds: list[int] = []
        self.groups: EpisodeGroups | None = None
        self.status = b""
        self.started_program: bool | None = None  # known at a timeout

    def _memfd(self, name: str, data: bytes) -> int:
        fd = os.memfd_create(f"agir-{name}", os.MFD_CLOEXEC)
        self.fds.append(fd)
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def _pipe(self) -> tuple[int, int]:
        read, write = os.pipe2(os.O_CLOEXEC)
        self.fds += [read, write]
        return read, write

    def start(self) -> None:
        limits, tools = self.limits, self.sandbox.tools
        if self.sandbox.pids is not None or self.sandbox.memory is not None:
            self.groups = EpisodeGroups(self.sandbox.pids, self.sandbox.memory)
            self.groups.limit(
                processes=limits.processes,
                memory_bytes=(limits.memory_mb << 20) + limits.disk_bytes,
            )
        self.status_r, status_w = self._pipe()
        block_r, self.block_w = self._pipe()
        self.out, self.err = output_file("stdout"), output_file("stderr")
        self.fds += [self.out, self.err]
        program_fd = self._memfd("program", self.program.encode("utf-8", "surrogatepass"))
        seccomp_fd = self._memfd("seccomp", self.sandbox.seccomp)
        args = bwrap_arguments(
            self.mount_point,
            status_fd=status_w,
            block_fd=block_r,
            seccomp_fd=seccomp_fd,
            program_fd=program_fd,
        )
        args_fd = self._memfd("args", b"".join(a.encode() + b"\0" for a in args))
        options = f"nosuid,nodev,mode=0755,size={limits.disk_bytes},nr_inodes={limits.inodes}"
        rlimits = [f"--as={limits.memory_mb << 20}", f"--fsize={limits.file_size_mb << 20}"]
        if self.sandbox.nproc:  # counted in this episode's user namespace: the init, bwrap's own
            rlimits.append(f"--nproc={limits.processes + 1}")
        command = [
            tools["unshare"], "--user", "--map-root-user", "--mount",
            tools["sh"], "-c", MOUNT_SCRIPT, "sh", str(self.mount_point), options,
            tools["prlimit"], *rlimits, "--core=0", "--",
            tools["bwrap"], "--args", str(args_fd), "--", self.sandbox.interpreter, PROGRAM_PATH,
        ]  # fmt: skip
        passed = (status_w, block_r, args_fd, seccomp_fd, program_fd)
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self.out,
            stderr=self.err,
            env={},
            cwd="/",
            start_new_session=True,
            pass_fds=passed,
        )
        for fd in passed:  # the jail holds them now
            self.fds.remove(fd)
            os.close(fd)
        self.child = self._child_pid()
        self.child_fd = os.pidfd_open(self.child)
        if self.groups is not None:
            self.groups.add(self.child)  # before any of the program runs (bwrap is blocked)
        self.root = os.open(f"/proc/{self.process.pid}/root{self.mount_point}", _DIR)
        fs = os.fstatvfs(self.root)
        if fs.f_files != limits.inodes or fs.f_blocks * fs.f_frsize < limits.disk_bytes:
            raise HarnessError(f"the episode filesystem at {self.mount_point} is not mounted")

    def _child_pid(self, timeout_s: float = 30.0) -> int:
        """The jail's init (host pid), from bwrap's first status line."""
        deadline = time.monotonic() + timeout_s
        poller = select.poll()
        poller.register(self.status_r, select.POLLIN)
        while b"}" not in self.status:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                break
            chunk = os.read(self.status_r, 4096)
            if not chunk:
                break
            self.status += chunk
        try:
            first, _, self.status = self.status.partition(b"}")
            return int(json.loads(first + b"}")["child-pid"])
        except (ValueError, KeyError, TypeError):
            raise HarnessError(
                f"bubblewrap did not start: {read_tail(self.err).strip()[-300:]}"
            ) from None

    def run(self) -> SandboxResult:
        """Let the program go, wait for it (killing the jail at the wall time), judge the stop."""
        assert self.process is not None
        assert self.child is not None
        start = time.monotonic()
        try:
            os.write(self.block_w, b"g")
        except BrokenPipeError:  # bwrap failed before blocking; its stderr says why
            pass
        timed_out = wait_or_kill(self.process, self.limits.wall_s, kill=self._kill)
        if not wait_pid(self.child, 0.5, self.child_fd):  # still tearing its namespace down
            signal.pidfd_send_signal(self.child_fd, signal.SIGKILL)
            if not wait_pid(self.child, 10, self.child_fd):
                raise HarnessError("the jail's processes outlived it")
        reap(self.child)
        seconds = time.monotonic() - start
        self.status += self._rest_of_status()
        started = b'"exit-code"' in self.status if not timed_out else self.started_program
        if not started:
            raise HarnessError(
                "the jail stopped before its program started: "
                f"{read_tail(self.err).strip()[-300:] or 'no message'}"
            )
        code = exit_status(self.process.returncode)
        stderr = read_tail(self.err)
        refused = self.groups.refused_forks() if self.groups is not None else None
        killed = self.groups.oom_kills() if self.groups is not None else None
        return SandboxResult(
            exit_code=code,
            stopped_by=classify(
                code,
                stderr,
                timed_out=timed_out,
                processes_hit=None if refused is None else refused > 0,
                memory_hit=bool(killed),
                disk_full=filesystem_full(self.root),
            ),
            seconds=seconds,
            stdout_tail=read_tail(self.out),
            stderr_tail=stderr,
        )

    def _kill(self) -> None:
        """At the wall time: note whether the program had started, then kill the jail."""
        assert self.child is not None
        assert self.process is not None
        try:
            children = Path(f"/proc/{self.child}/task/{self.child}/children").read_text()
            self.started_program = bool(children.split())
        except OSError:
            self.started_program = True  # the init is gone: its program ran and ended
        try:
            signal.pidfd_send_signal(self.child_fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _rest_of_status(self) -> bytes:
        os.set_blocking(self.status_r, False)
        data = b""
        try:
            while chunk := os.read(self.status_r, 4096):
                data += chunk
        except BlockingIOError:
            pass
        return data

    def close(self) -> None:
        """Stop whatever still runs, free the filesystem and every descriptor."""
        if self.process is not None and self.process.poll() is None:
            if self.child_fd != -1:
                signal.pidfd_send_signal(self.child_fd, signal.SIGKILL)
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
        if self.child_fd != -1:
            wait_pid(self.child, 10, self.child_fd)
            assert self.child is not None
            reap(self.child)
            os.close(self.child_fd)
        if self.groups is not None:
            self.groups.kill_and_remove()
        for fd in [self.root, *self.fds]:
            if fd != -1:
                os.close(fd)
        self.root, self.fds = -1, []


def bwrap_arguments(
    mount_point: Path,
    *,
    status_fd: int,
    block_fd: int,
    seccomp_fd: int,
    program_fd: int,
) -> list[str]:
    """bwrap's options (passed by descriptor; the command itself follows on its command line)."""
    args = [
        "--unshare-all",  # user, pid, net, ipc, uts, cgroup (net: not even the host's loopback)
        "--unshare-user",  # --unshare-all only tries; we require it
        "--disable-userns",  # no nested user namespace to regain capabilities in
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox",
        "--json-status-fd", str(status_fd),  # says the init's pid, and whether exec happened
        "--block-fd", str(block_fd),
        "--seccomp", str(seccomp_fd),
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for link in ("lib", "lib64", "bin", "sbin"):
        if Path(f"/{link}").is_symlink():
            args += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    # /dev is a tmpfs outside the measured copy: read-only, but for /dev/shm, which is the
    # episode filesystem's (bounded, and measured like the scenario's roots)
    args += ["--bind", f"{mount_point}/dev/shm", "/dev/shm", "--remount-ro", "/dev"]
    for folder in SCENARIO_ROOTS:
        args += ["--bind", f"{mount_point}{folder}", folder]
    args += ["--perms", "0444", "--ro-bind-data", str(program_fd), PROGRAM_PATH]
    args += ["--remount-ro", "/", "--clearenv"]  # the jail's own root is no place to write
    for key, value in SANDBOX_ENV.items():
        args += ["--setenv", key, value]
    return [*args, "--chdir", "/"]


def _tools() -> dict[str, str]:
    found = {tool: shutil.which(tool, path="/usr/bin:/bin:/usr/sbin:/sbin") for tool in TOOLS}
    missing = sorted(tool for tool, path in found.items() if path is None)
    if missing:
        raise SandboxError(
            f"the bwrap sandbox needs {', '.join(missing)}: apt-get install bubblewrap util-linux"
        )
    return {tool: path for tool, path in found.items() if path is not None}


def _nproc_binds_per_episode() -> bool:
    """RLIMIT_NPROC bounds one episode: not root (exempt), and counted per user namespace."""
    release = tuple(int(p) for p in os.uname().release.split("-")[0].split(".")[:2])
    return os.geteuid() != 0 and release >= NPROC_PER_USERNS_KERNEL


_checked: set[tuple[str, str]] = set()


def _check_runs(sandbox: BwrapSandbox) -> None:
    """Run one trivial program in a jail, once per process, so a broken setup fails loudly."""
    key = (sandbox.interpreter, sandbox.work_dir)
    if key in _checked:
        return
    try:
        limits = SandboxLimits(wall_s=60, disk_bytes=1 << 20, inodes=64)
        with sandbox.session("print('ok')\n", limits) as jail:
            result = jail.run()
    except (HarnessError, OSError) as exc:
        raise SandboxError(f"bubblewrap cannot run a program here: {exc}") from exc
    if result.exit_code != 0 or result.stdout_tail.strip() != "ok":
        raise SandboxError(
            f"bubblewrap cannot run a program here (exit {result.exit_code}): "
            f"{result.stderr_tail.strip()[-300:]}"
        )
    _checked.add(key)
