"""Host files as an image's root filesystem: the libraries they load, and tar folders above them.

The sandbox's docker image and the docker backend's training base image are both imported
from a tar stream of this machine's own files (no registry); this is what they share.
"""

from __future__ import annotations

import subprocess
import tarfile


def elf_dependencies(paths: list[str], timeout_s: float = 60) -> set[str]:
    """The shared libraries (and the loader) these ELF files load, as ldd resolves them."""
    found: set[str] = set()
    for start in range(0, len(paths), 64):
        done = subprocess.run(
            ["ldd", *paths[start : start + 64]], capture_output=True, text=True, timeout=timeout_s
        )
        for line in done.stdout.splitlines():
            target = line.split("=>", 1)[1] if "=>" in line else line
            target = target.strip().split(" (", 1)[0].strip()
            if target.startswith("/") and not target.endswith(":"):  # not a "file:" header
                found.add(target)
    return found


def add_folders_above(tar: tarfile.TarFile, name: str, added: set[str]) -> None:
    """Add each folder above ``name`` not yet in the stream (0755: /root too, it may hold Python)."""
    parts = name.strip("/").split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        folder = "/" + "/".join(parts[:depth])
        if folder not in added:
            info = tarfile.TarInfo(folder.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
            added.add(folder)
