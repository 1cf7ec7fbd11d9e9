"""A base image for the training image, made from this host's own Python: no registry needed.

``container/Dockerfile`` builds ``FROM`` a CUDA PyTorch image. Where no registry can be
reached (an air-gapped host, or this one), ``ensure_base_image()`` makes a base instead by
``docker import`` of a tar stream of files already here, and returns its tag for
``--set submit.base_image=<tag>``:

- the interpreter this environment is based on (``sys.base_prefix``), at its own path (its
  RUNPATH names that path), with its standard library (no tests, IDLE or Tk);
- this environment's site-packages (torch, transformers, TRL, PEFT, ..., ``pip`` itself),
  put in that interpreter's own site-packages, without agir-retrain (the image gets the
  project from its build context); every pin of ``container/constraints.txt`` must be
  installed here, so the image's ``pip install`` needs no network;
- ``/usr/bin/python3`` and its standard library: the bwrap sandbox runs a job's episodes with
  it, from ``/usr``, as on the host;
- the shell and tools the Dockerfile, the entry point and the sandbox use (``useradd``,
  ``bwrap``, ``unshare``, ``mount``, ``prlimit``, coreutils, ...), the ELF libraries all of the above load, and a
  minimal ``/etc`` (root only: ``useradd`` adds the image's user).

The tag is ``<repository>:<digest>`` of what goes in (interpreter, distributions and their
versions, tools, ``IMAGE_VERSION``), also kept as a label: an image with that tag is reused,
so only a changed environment is imported again. ``python -m
agir_retrain.tasks.delivery.base_image`` prints the tag, importing the image first if missing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import threading
from importlib.metadata import distributions
from pathlib import Path
from typing import IO

from agir_retrain.tasks.errors import ConfigError, SubmitError
from agir_retrain.tasks.rootfs import add_folders_above, elf_dependencies

log = logging.getLogger(__name__)

REPOSITORY = "agir-train-base"
LABEL = "org.agir-retrain.base"  # its value is the content digest in the tag
IMAGE_VERSION = "1"  # bump when what goes into the image changes; older images are not reused
SYSTEM_PYTHON = "/usr/bin/python3"  # the sandbox's interpreter (EnvironmentSettings.interpreter)
TOOLS = (
    "sh", "dash", "bash", "env", "id", "ls", "cat", "echo", "cp", "mv", "rm", "ln", "mkdir",
    "rmdir", "chmod", "chown", "touch", "truncate", "head", "tail", "sort", "wc", "grep", "sed",
    "awk", "mawk", "find", "xargs", "du", "df", "stat", "date", "sleep", "true", "false",
    "uname", "readlink", "dirname", "basename", "tar", "gzip", "prlimit", "bwrap", "useradd",
    "unshare", "mount", "umount",  # the bwrap sandbox mounts each episode's bounded tmpfs
)  # fmt: skip
# Libraries Python loads by name (ctypes), which no tool links: the sandbox's seccomp filter
LIBRARIES = ("libseccomp.so.2",)
_LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
)
# not in the image: tests, GUIs (_tkinter loads X11), the interpreter's own site-packages
_SKIPPED_STDLIB = (
    "test",
    "idlelib",
    "tkinter",
    "_tkinter",
    "turtledemo",
    "site-packages",
    "dist-packages",
)
_ETC = {  # root alone; the Dockerfile's useradd adds the job's user
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\n",
    "etc/gshadow": "root:*::\n",
}


def unmet_pins(constraints: Path) -> list[str]:
    """The ``name==version`` lines of a constraints file that this environment does not hold."""
    installed = {_norm(d.metadata["Name"]): d.version for d in distributions()}
    unmet = []
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        if installed.get(_norm(name)) != version.strip():
            unmet.append(line)
    return unmet


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _interpreter() -> tuple[Path, Path]:
    """The real interpreter this environment runs on, and the site-packages it should see."""
    executable = Path(os.path.realpath(sys.executable))
    site = subprocess.run(
        [str(executable), "-I", "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    return executable, Path(site)


def _own_site_packages() -> list[Path]:
    """This environment's site-packages folders (purelib, platlib)."""
    found = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    return sorted(p for p in found if p.is_dir())


def content_digest() -> str:
    """Digest of what the image would hold: interpreter, distributions, tools, IMAGE_VERSION."""
    executable, site = _interpreter()
    digest = hashlib.sha256(f"{IMAGE_VERSION}\n{executable}\n{site}\n{sys.version}\n".encode())
    for name in sorted(f"{_norm(d.metadata['Name'])}=={d.version}" for d in distributions()):
        if not name.startswith("agir-retrain=="):
            digest.update(f"{name}\n".encode())
    digest.update(" ".join(t for t in TOOLS if shutil.which(t)).encode())
    digest.update(" ".join(LIBRARIES).encode())
    return digest.hexdigest()[:16]


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def _walk(root: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Every folder, file and link under ``root`` (links not followed), folders first."""
    entries = [str(root)]
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        entries += [os.path.join(folder, d) for d in dirs]
        entries += [os.path.join(folder, n) for n in sorted(names) if n.split(".")[0] not in skip]
    return entries


def _plan(timeout_s: float) -> list[tuple[str, str, bool]]:
    """Everything the image holds: (host path, path in the image, follow links to content)."""
    executable, site = _interpreter()
    stdlib = Path(sysconfig.get_paths(vars={"installed_base": sys.base_prefix})["stdlib"])
    entries = [(str(executable), str(executable), False)]
    for name in ("python", "python3"):  # the Dockerfile and entry point call `python`
        link = executable.parent / name
        if link.is_symlink() and os.path.realpath(link) == str(executable):
            entries.append((str(link), str(link), False))
    entries += [(p, p, False) for p in _walk(stdlib, _SKIPPED_STDLIB)]
    for own in _own_site_packages():
        for path in _walk(own):
            name = os.path.relpath(path, own)
            if "agir_retrain" in name and not name.startswith("agir_retrain/"):
                continue  # its editable install points at this checkout; the image has /app
            entries.append((path, str(site / name) if name != "." else str(site), False))
    if os.path.exists(SYSTEM_PYTHON):
        system = os.path.realpath(SYSTEM_PYTHON)
        system_stdlib = subprocess.run(
            [system, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()  # fmt: skip
        entries += [(SYSTEM_PYTHON, SYSTEM_PYTHON, False), (system, system, False)]
        entries += [(p, p, False) for p in _walk(Path(system_stdlib), _SKIPPED_STDLIB)]
    for tool in TOOLS:
        if found := shutil.which(tool, path="/usr/bin:/usr/sbin:/bin:/sbin"):
            entries.append((found, found, True))
    for library in LIBRARIES:
        for folder in _LIBRARY_DIRS:
            if os.path.exists(found := os.path.join(folder, library)):
                entries.append((found, found, True))
                break
    elves = [
        host
        for host, _, _ in entries
        if not os.path.islink(host)
        and os.path.isfile(host)
        and (".so" in os.path.basename(host) or os.access(host, os.X_OK))
        and _is_elf(host)
    ]
    elves += [os.path.realpath(host) for host, _, follow in entries if follow]
    # a library inside a copied tree (torch's own, via $ORIGIN) is there already
    trees = tuple(os.path.realpath(p) + os.sep for p in (*_own_site_packages(), stdlib))
    libraries = sorted(
        p for p in elf_dependencies(elves, timeout_s) if not os.path.realpath(p).startswith(trees)
    )
    return entries + [(p, p, True) for p in libraries]


def _image_path(path: str) -> str:
    """Where a host file lies in the image: its folder resolved (``/lib`` -> ``/usr/lib``)."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _stream_rootfs(stream: IO[bytes], entries: list[tuple[str, str, bool]]) -> int:
    """Write the image's root filesystem as a tar stream; return the number of entries."""
    added: set[str] = set()
    with tarfile.open(fileobj=stream, mode="w|") as tar:
        for link in ("bin", "sbin", "lib", "lib64"):  # the host's merged-/usr links, kept
            if os.path.islink(f"/{link}"):
                info = tarfile.TarInfo(link)
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(f"/{link}")
                tar.addfile(info)
                added.add(f"/{link}")
        for folder, mode in (("tmp", 0o1777), ("home", 0o755), ("var/mail", 0o755)):
            add_folders_above(tar, folder, added)
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
            added.add(f"/{folder}")
        for path, text in _ETC.items():
            add_folders_above(tar, path, added)
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o600 if "shadow" in path else 0o644
            tar.addfile(info, io.BytesIO(data))
            added.add(f"/{path}")
        if os.path.isfile("/etc/login.defs"):  # useradd's defaults (uid ranges, user groups)
            tar.add("/etc/login.defs", arcname="etc/login.defs", recursive=False)
        for host, target, follow in entries:
            # tools and libraries are followed to their content under the name asked for
            # (/usr/bin/awk -> /etc/alternatives/awk -> mawk); links inside a tree stay links
            name = _image_path(target) if follow else target
            if name in added:
                continue
            add_folders_above(tar, name, added)
            tar.add(os.path.realpath(host) if follow else host, arcname=name.lstrip("/"),
                    recursive=False)  # fmt: skip
            added.add(name)
    return len(added)


def _docker() -> str:
    binary = shutil.which("docker")
    if binary is None:
        raise SubmitError(
            "docker", None, "the docker CLI is not installed (apt-get install docker.io)"
        )
    return binary


def image_present(tag: str, timeout_s: float = 60) -> bool:
    """Whether the engine holds ``tag`` with this module's label (an import that finished)."""
    done = subprocess.run(
        [_docker(), "image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}', tag],
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    return done.returncode == 0 and done.stdout.strip() == tag.rsplit(":", 1)[1]


def build_base_image(tag: str, timeout_s: float = 1800) -> int:
    """Import the image ``tag`` (see the module docstring); return its number of entries.

    Stops the import (and leaves no image) past ``timeout_s``.
    """
    from agir_retrain.tasks.delivery.package_data import container_file

    unmet = unmet_pins(container_file("constraints.txt"))
    if unmet:
        raise ConfigError(
            f"this environment lacks {len(unmet)} pin(s) of container/constraints.txt "
            f"({', '.join(unmet[:5])}{', ...' if len(unmet) > 5 else ''}); the image's build "
            "could not install them without a network: pip install -c "
            "container/constraints.txt the missing packages first"
        )
    executable, _site = _interpreter()
    path = f"{executable.parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    entries = _plan(timeout_s)
    importer = subprocess.Popen(
        [_docker(), "import", "--change", f"ENV PATH={path}", "--change", "ENV LANG=C.UTF-8",
         "--change", f"LABEL {LABEL}={tag.rsplit(':', 1)[1]}", "--change", 'CMD ["python"]',
         "-", tag],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    if importer.stdin is None:  # for the type checker: stdin=PIPE always gives one
        raise SubmitError("docker import", None, "no stdin")
    watchdog = threading.Timer(timeout_s, importer.kill)  # a stalled engine must not hang us
    watchdog.start()
    try:
        added = _stream_rootfs(importer.stdin, entries)
        _out, err = importer.communicate(timeout=timeout_s)
    except BaseException:
        importer.kill()  # an interrupted stream must not become a half image
        importer.wait()
        raise
    finally:
        watchdog.cancel()
    if importer.returncode != 0:
        raise SubmitError(f"docker import {tag}", importer.returncode, err.decode(errors="replace"))
    log.info("imported base image %s (%d entries)", tag, added)
    return added


def ensure_base_image(repository: str = REPOSITORY, timeout_s: float = 1800) -> str:
    """The tag of this environment's base image, importing it first if the engine lacks it."""
    tag = f"{repository}:{content_digest()}"
    if not image_present(tag):
        build_base_image(tag, timeout_s)
        _remove_older(tag)
    return tag


def _remove_older(tag: str) -> None:
    """Untag this repository's older base images (2-3 GB each); images built on them keep them."""
    repository = tag.rsplit(":", 1)[0]
    listed = subprocess.run(
        [_docker(), "image", "ls", "--filter", f"label={LABEL}", "--format",
         "{{.Repository}}:{{.Tag}}", repository],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    for older in set(listed.stdout.split()) - {tag}:
        subprocess.run([_docker(), "image", "rm", older], capture_output=True, timeout=300)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.stdout.write(ensure_base_image() + "\n")
