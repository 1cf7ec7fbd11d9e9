"""The docker backend: one container per episode, for machines where a Docker engine runs.

The container shows what the bwrap jail shows: ``/usr`` read-only (here the image's: the
host's Python, its standard library and common shell tools, with the libraries they load),
the scenario's roots and ``/dev/shm`` bind-mounted writable from the episode's own tmpfs
(mounted on the host by the harness, bounded in bytes and inodes, so this backend needs
root), ``/agir/program.py`` read-only, no network (``--network none``), no capabilities,
uid 1000, the same environment variables. Limits: RLIMIT_AS and RLIMIT_FSIZE as ulimits (so
a memory hog gets the same MemoryError as under bwrap), ``--pids-limit`` for processes,
``--memory`` for the container as a whole. ``--init`` runs the program as pid 2 under an
init, as bwrap does. The engine's default seccomp profile applies (not the bwrap filter).

The image is built locally from the host's own files (``docker import``: no registry is
needed) the first time it is missing.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import IO

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
    classify,
    exit_status,
    filesystem_full,
    output_file,
    read_tail,
    remove_tree,
    wait_or_kill,
)
from agir_retrain.tasks.rootfs import add_folders_above, elf_dependencies

log = logging.getLogger(__name__)

LABEL = "agir-retrain.sandbox"
INTERPRETER = "/usr/bin/python3"
# Tools agents' programs call through subprocess; copied from the host when present.
IMAGE_TOOLS = (
    "sh", "dash", "bash", "ls", "rm", "du", "df", "find", "xargs", "cat", "echo", "stat",
    "mkdir", "rmdir", "mv", "cp", "touch", "truncate", "head", "tail", "sort", "wc", "grep",
    "sed", "awk", "mawk", "gzip", "tar", "date", "sleep", "true", "false", "env", "id",
    "prlimit",  # sets RLIMIT_AS inside: docker's --ulimit has no "as" (20.10)
)  # fmt: skip
DOCKER_RUN_FAILED = 125  # docker run's own failure (not the program's status)
IMAGE_VERSION = "2"  # bump when the image's contents change; an older image is rebuilt
_counter = itertools.count()
# Files the engine creates in the container's /etc (our volume) to mount its own on: empty,
# not the program's, removed before the copy is measured
ENGINE_MOUNT_POINTS = ("etc/hostname", "etc/hosts", "etc/resolv.conf")
STARTUP_GRACE_S = 2.0  # added to the wall time: the engine takes this long to start a container


def _docker() -> str:
    binary = shutil.which("docker")
    if binary is None:
        raise SandboxError("the docker CLI is not installed (apt-get install docker.io)")
    return binary


def _image_files(interpreter: str) -> list[str]:
    """Every host path the image holds: the interpreter, its stdlib, tools, their libraries."""
    stdlib = subprocess.run(
        [interpreter, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    files = [interpreter, os.path.realpath(interpreter)]
    for folder, dirs, names in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in {"test", "idlelib", "tkinter", "turtledemo"}]
        files += [os.path.join(folder, n) for n in names]
    files += [p for tool in IMAGE_TOOLS if (p := f"/usr/bin/{tool}") and os.path.exists(p)]
    elves = [f for f in files if f.endswith(".so") or f.startswith("/usr/bin/")]
    files += sorted(elf_dependencies(elves))
    return files


def build_image(tag: str, interpreter: str = INTERPRETER) -> None:
    """Import an image holding the host's Python and tools under /usr (a few seconds)."""
    docker = _docker()
    files = _image_files(interpreter)
    importer = subprocess.Popen(
        [docker, "import", "--change", f"ENV PATH={SANDBOX_ENV['PATH']}",
         "--change", f"LABEL {LABEL}={IMAGE_VERSION}", "-", tag],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    if importer.stdin is None:  # for the type checker: stdin=PIPE always gives one
        raise SandboxError("docker import has no stdin")
    try:
        added = _stream_rootfs(importer.stdin, files, interpreter)
    except BaseException:
        importer.kill()  # an interrupted stream must not become a half image
        importer.wait()
        raise
    _out, err = importer.communicate(timeout=600)
    if importer.returncode != 0:
        raise SandboxError(f"docker import of {tag} failed: {err.decode(errors='replace')[-300:]}")
    log.info("built sandbox image %s (%d files)", tag, added)


def _stream_rootfs(stream: IO[bytes], files: list[str], interpreter: str) -> int:
    """Write the image's root filesystem as a tar stream; return the number of entries."""
    added: set[str] = set()
    with tarfile.open(fileobj=stream, mode="w|") as tar:
        for link in ("lib", "lib64", "bin", "sbin"):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, f"usr/{link}"
            tar.addfile(info)
        for folder in ("agir", "proc", "dev", *(r.lstrip("/") for r in SCENARIO_ROOTS)):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path in files:
            # /lib/x86_64-linux-gnu/... (what ldd says) lies under /usr/lib in the image
            name = path if path.startswith("/usr/") else "/usr" + path
            if name in added:
                continue
            add_folders_above(tar, name, added)
            # links are followed (/usr/bin/awk -> /etc/alternatives/...), except the
            # interpreter's own, which is relative and whose target is in the image too
            source = path if path == interpreter else os.path.realpath(path)
            tar.add(source, arcname=name.lstrip("/"), recursive=False)
            added.add(name)
    return len(added)


@cache
def _ensure_engine_and_image(tag: str) -> bool:
    """Check the engine answers and the image exists (building it); True when --init works."""
    docker = _docker()
    try:
        subprocess.run([docker, "version"], capture_output=True, check=True, timeout=30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"no Docker engine answers: {exc}") from exc
    present = subprocess.run(
        [docker, "image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}', tag],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if present.returncode != 0 or present.stdout.strip() != IMAGE_VERSION:
        build_image(tag)
    probe = subprocess.run(
        [docker, "run", "--rm", "--init", "--network", "none", tag, INTERPRETER, "-c", "print('ok')"],
        capture_output=True, timeout=120,
    )  # fmt: skip
    if probe.returncode == 0 and probe.stdout.strip() == b"ok":
        return True
    plain = subprocess.run(
        [docker, "run", "--rm", "--network", "none", tag, INTERPRETER, "-c", "print('ok')"],
        capture_output=True, timeout=120,
    )  # fmt: skip
    if plain.returncode != 0:
        raise SandboxError(
            f"image {tag} cannot run Python: {plain.stderr.decode(errors='replace')[-300:]}"
        )
    log.warning("docker --init is unavailable; the program runs as pid 1 in its container")
    return False


class DockerSandbox:
    """Run programs in one Docker container each (see the module docstring)."""

    name = "docker"

    def __init__(self, image: str = "agir-sandbox:local", *, work_dir: str | None = None) -> None:
        if os.geteuid() != 0:
            raise SandboxError(
                "the docker backend mounts each episode's bounded filesystem (a tmpfs), which "
                "needs root; run as root, or use the bwrap backend"
            )
        self.image = image
        self.docker = _docker()
        self.work_dir = work_dir or tempfile.gettempdir()
        self.init = _ensure_engine_and_image(image)

    def command(self, episode: Path, limits: SandboxLimits, name: str) -> list[str]:
        """The ``docker run`` command line of one episode (its filesystem at ``episode/fs``)."""
        memory, size = limits.memory_mb << 20, limits.file_size_mb << 20
        whole = 2 * limits.memory_mb + 64 + (limits.disk_bytes >> 20)  # tmpfs pages count too
        args = [
            self.docker, "run", "--rm", "--name", name, "--label", f"{LABEL}=episode",
            "--network", "none", "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--user", f"{SANDBOX_UID}:{SANDBOX_UID}",
            "--hostname", "sandbox", "--workdir", "/", "--log-driver", "none",
            "--pids-limit", str(limits.processes),
            "--memory", f"{whole}m", "--memory-swap", f"{whole}m",
            "--ulimit", f"fsize={size}:{size}", "--ulimit", "core=0",
        ]  # fmt: skip
        if self.init:
            args.append("--init")
        for key, value in {**SANDBOX_ENV, "PWD": "/"}.items():  # bwrap's --chdir sets PWD
            args += ["--env", f"{key}={value}"]
        for folder in (*SCENARIO_ROOTS, "/dev/shm"):  # /dev/shm too: bounded and measured
            args += ["--volume", f"{episode / 'fs' / folder.lstrip('/')}:{folder}"]
        args += ["--volume", f"{episode / 'program.py'}:{PROGRAM_PATH}:ro"]
        limit_as = ["/usr/bin/prlimit", f"--as={memory}", "--"]  # as bwrap's RLIMIT_AS
        return [*args, self.image, *limit_as, INTERPRETER, PROGRAM_PATH]

    @contextmanager
    def session(self, program: str, limits: SandboxLimits) -> Iterator[_Container]:
        """Mount the episode's tmpfs (bytes and inodes bounded), yield it; unmount at the end."""
        try:
            episode = Path(
                tempfile.mkdtemp(prefix=f"{EPISODE_PREFIX}{os.getpid()}-", dir=self.work_dir)
            )
        except OSError as exc:  # a full work dir: this episode's failure, not the run's
            raise HarnessError(f"no episode folder in {self.work_dir}: {exc}") from exc
        mounted, root = False, -1
        try:
            (episode / "program.py").write_text(program, encoding="utf-8", errors="surrogatepass")
            os.chmod(episode, 0o755)  # the container's user reads the program through it
            (episode / "fs").mkdir()
            options = f"nosuid,nodev,mode=0755,size={limits.disk_bytes},nr_inodes={limits.inodes}"
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "agir-episode", str(episode / "fs")],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if done.returncode != 0:
                raise HarnessError(f"the episode filesystem could not be mounted: {done.stderr}")
            mounted = True
            root = os.open(episode / "fs", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            os.chown(root, SANDBOX_UID, SANDBOX_UID)
            yield _Container(self, episode, root, limits)
        except OSError as exc:
            raise HarnessError(f"the episode could not be set up: {exc}") from exc
        finally:
            if root != -1:
                os.close(root)
            if mounted:
                subprocess.run(["umount", "--lazy", str(episode / "fs")], timeout=60, check=False)
            remove_tree(episode)


class _Container:
    """One episode's container (a ``SandboxSession``)."""

    whole_filesystem = True
    owner = (SANDBOX_UID, SANDBOX_UID)  # bind-mounted files must belong to the container's user

    def __init__(
        self, sandbox: DockerSandbox, episode: Path, root: int, limits: SandboxLimits
    ) -> None:
        self.sandbox, self.episode, self.root, self.limits = sandbox, episode, root, limits

    def run(self) -> SandboxResult:
        """Run the program in a fresh container; every process is gone when it returns."""
        docker = self.sandbox.docker
        name = f"agir-episode-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:8]}"
        refused: list[bool] = []

        def kill() -> None:
            refused.append(_refused_forks(docker, name) > 0)
            subprocess.run([docker, "kill", name], capture_output=True, timeout=60)

        start = time.monotonic()
        out, err = output_file("stdout"), output_file("stderr")
        try:
            process = subprocess.Popen(
                self.sandbox.command(self.episode, self.limits, name),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            # the engine needs its own start-up time on top of the program's wall time
            timed_out = wait_or_kill(
                process, self.limits.wall_s, kill=kill, grace_s=STARTUP_GRACE_S
            )
            seconds = time.monotonic() - start
            code = exit_status(process.returncode)
            stderr = read_tail(err)
            stdout = read_tail(out)
        finally:
            os.close(out)
            os.close(err)
        if code == DOCKER_RUN_FAILED and stderr.startswith(("docker: ", "invalid argument")):
            raise HarnessError(f"docker could not run the episode: {stderr.strip()[:300]}")
        for name in ENGINE_MOUNT_POINTS:
            try:
                info = os.lstat(name, dir_fd=self.root)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_size == 0 and info.st_blocks == 0:
                os.unlink(name, dir_fd=self.root)
        return SandboxResult(
            exit_code=code,
            stopped_by=classify(
                code,
                stderr,
                timed_out=timed_out,
                processes_hit=refused[0] if refused else None,
                disk_full=filesystem_full(self.root),
            ),
            seconds=seconds,
            stdout_tail=stdout,
            stderr_tail=stderr,
        )


def _refused_forks(docker: str, name: str) -> int:
    """Forks the container's pids cgroup refused (cgroup v1, cgroupfs driver), 0 if unknown."""
    found = subprocess.run(
        [docker, "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True, timeout=30
    )
    container = found.stdout.strip()
    if not container:
        return 0
    for events in (
        Path(f"/sys/fs/cgroup/pids/docker/{container}/pids.events"),
        Path(f"/sys/fs/cgroup/pids/system.slice/docker-{container}.scope/pids.events"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container}.scope/pids.events"),
    ):
        try:
            for line in events.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        except OSError:
            continue
    return 0
