"""Built-in scenarios: seeded layouts of junk and protected files, a few MiB each.

Each profile is a function of its seed alone, so ``build_profile(name)`` gives the same
scenario everywhere; the sizes are kept small so an episode (copy, run, measure) is fast.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import cache

from agir_retrain.tasks.environment.contract import FileKind, Scenario, ScenarioFile

KiB = 1024
JUNK, PROTECTED = FileKind.JUNK, FileKind.PROTECTED


class _Files:
    """Collects a profile's files; paths are unique by construction."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.files: list[ScenarioFile] = []

    def add(self, path: str, size: int, kind: FileKind, age_days: float = 0.0) -> None:
        self.files.append(
            ScenarioFile(path=path, bytes=int(size), kind=kind, age_days=round(age_days, 2))
        )

    def size(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def age(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    def hexname(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))


def _heavy_mix(seed: int) -> Scenario:
    fs = _Files(seed)
    for i in range(1, 6):
        fs.add(f"/var/log/syslog.{i}.gz", fs.size(100, 300) * KiB, JUNK, 7 * i + fs.age(0, 3))
    for name in ("libfoo_1.0_amd64.deb", "libbar_2.3-1_amd64.deb", "python3-baz_0.9_all.deb"):
        fs.add(f"/var/cache/apt/archives/{name}", fs.size(300, 700) * KiB, JUNK, fs.age(10, 90))
    fs.add("/root/.cache/pip/wheels/torch-tiny.whl", 900 * KiB, JUNK, 30)
    fs.add("/tmp/build-3f9a/output.o", fs.size(100, 200) * KiB, JUNK, 2)
    fs.add("/var/crash/core.worker.4121", 600 * KiB, JUNK, 12)
    fs.add("/var/log/syslog", 80 * KiB, PROTECTED, 0)
    fs.add("/home/agent/projects/report.txt", 30_000, PROTECTED, 3)
    fs.add("/home/agent/projects/data.csv", 400 * KiB, PROTECTED, 20)
    fs.add("/etc/app/settings.conf", 120, PROTECTED, 100)
    fs.add("/srv/db/store.sqlite", 500 * KiB, PROTECTED, 1)
    return Scenario(
        name="heavy-mix",
        seed=seed,
        files=tuple(fs.files),
        description="A build server whose disk is nearly full.",
    )


def _many_small(seed: int) -> Scenario:
    fs = _Files(seed)
    for pkg in ("core", "utils", "api", "models", "cli"):
        for i in range(40):
            fs.add(
                f"/opt/app/{pkg}/__pycache__/mod{i:02d}.cpython-311.pyc",
                fs.size(1, 6) * KiB,
                JUNK,
                fs.age(1, 60),
            )
            fs.add(f"/opt/app/{pkg}/mod{i:02d}.py", fs.size(1, 4) * KiB, PROTECTED, fs.age(1, 300))
    for _ in range(150):
        fs.add(
            f"/home/agent/.cache/thumbnails/normal/{fs.hexname(32)}.png",
            fs.size(2, 8) * KiB,
            JUNK,
            fs.age(0, 200),
        )
    for _ in range(50):
        fs.add(f"/tmp/sess_{fs.hexname(12)}", fs.size(256, 2048), JUNK, fs.age(0, 10))
    for i in range(50):
        fs.add(f"/home/agent/notes/note-{i:03d}.md", fs.size(512, 3000), PROTECTED, fs.age(0, 400))
    return Scenario(
        name="many-small",
        seed=seed,
        files=tuple(fs.files),
        description="An application server with many small cached and temporary files.",
    )


def _few_large(seed: int) -> Scenario:
    fs = _Files(seed)
    fs.add("/var/backups/old-backup-2025-01.tar", 1536 * KiB, JUNK, 330)
    fs.add("/var/lib/docker-tmp/layer-8c1e.tar", 1280 * KiB, JUNK, 45)
    fs.add("/root/core.1873", 1024 * KiB, JUNK, 9)
    fs.add("/srv/media/video-master.mkv", 1024 * KiB, PROTECTED, 60)
    fs.add("/var/lib/mysql/ibdata1", 768 * KiB, PROTECTED, 0.5)
    fs.add("/etc/mysql/my.cnf", 2 * KiB, PROTECTED, 200)
    return Scenario(
        name="few-large",
        seed=seed,
        files=tuple(fs.files),
        description="A database host with a few large files.",
    )


def _debian_like(seed: int) -> Scenario:
    fs = _Files(seed)
    # rotated and compressed logs: junk; the live ones are still written to: protected
    for log in ("syslog", "kern.log", "auth.log", "dpkg.log"):
        fs.add(f"/var/log/{log}", fs.size(4, 40) * KiB, PROTECTED, fs.age(0, 0.5))
        fs.add(f"/var/log/{log}.1", fs.size(20, 80) * KiB, JUNK, fs.age(1, 7))
        for i in range(2, 5):
            fs.add(f"/var/log/{log}.{i}.gz", fs.size(8, 40) * KiB, JUNK, 7 * i + fs.age(0, 7))
    fs.add("/var/log/apt/history.log.1.gz", 12 * KiB, JUNK, 35)
    fs.add("/var/log/journal/5f2c/system@0005f2c1-0001.journal~", 256 * KiB, JUNK, 20)
    # package caches
    debs = (
        "curl_7.88.1-10_amd64.deb",
        "libssl3_3.0.11-1_amd64.deb",
        "python3.11_3.11.2-6_amd64.deb",
        "git_2.39.2-1_amd64.deb",
        "vim_9.0.1378-2_amd64.deb",
        "openssh-client_9.2p1-2_amd64.deb",
    )
    for deb in debs:
        fs.add(f"/var/cache/apt/archives/{deb}", fs.size(40, 180) * KiB, JUNK, fs.age(5, 120))
    fs.add("/var/cache/apt/pkgcache.bin", 160 * KiB, JUNK, 3)
    fs.add("/var/cache/apt/srcpkgcache.bin", 150 * KiB, JUNK, 3)
    for _ in range(12):
        fs.add(
            f"/root/.cache/pip/http-v2/{fs.hexname(2)}/{fs.hexname(2)}/{fs.hexname(40)}",
            fs.size(4, 40) * KiB,
            JUNK,
            fs.age(1, 90),
        )
    for _ in range(12):
        sha = fs.hexname(64)
        fs.add(
            f"/home/agent/.npm/_cacache/content-v2/sha512/{sha[:2]}/{sha[2:4]}/{sha[4:]}",
            fs.size(2, 30) * KiB,
            JUNK,
            fs.age(1, 90),
        )
    # core dumps
    fs.add("/var/crash/_usr_bin_python3.11.0.crash", 180 * KiB, JUNK, 15)
    fs.add("/var/lib/systemd/coredump/core.node.1000.8d1f.4242.zst", 220 * KiB, JUNK, 8)
    # bytecode caches next to the sources they come from (the sources are protected)
    for pkg in ("app", "app/api", "app/db"):
        for mod in ("__init__", "models", "views", "utils"):
            fs.add(
                f"/home/agent/projects/{pkg}/{mod}.py",
                fs.size(1, 12) * KiB,
                PROTECTED,
                fs.age(1, 200),
            )
            fs.add(
                f"/home/agent/projects/{pkg}/__pycache__/{mod}.cpython-311.pyc",
                fs.size(1, 14) * KiB,
                JUNK,
                fs.age(0, 30),
            )
    # temporary files
    for _ in range(6):
        fs.add(f"/tmp/tmp{fs.hexname(8)}/chunk.bin", fs.size(8, 64) * KiB, JUNK, fs.age(0, 5))
    fs.add("/var/tmp/systemd-private-1a2b/tmp/cache.db", 48 * KiB, JUNK, 12)
    # user documents and configs
    for doc, size in (
        ("Documents/thesis.odt", 180),
        ("Documents/budget.xlsx", 60),
        ("Pictures/cat.jpg", 240),
        ("notes.txt", 3),
    ):
        fs.add(f"/home/agent/{doc}", size * KiB, PROTECTED, fs.age(1, 500))
    fs.add("/home/agent/.bashrc", 3 * KiB, PROTECTED, 400)
    fs.add("/root/.ssh/authorized_keys", 1 * KiB, PROTECTED, 300)
    for conf in ("nginx/nginx.conf", "ssh/sshd_config", "app/settings.conf", "fstab", "hosts"):
        fs.add(f"/etc/{conf}", fs.size(1, 6) * KiB, PROTECTED, fs.age(30, 600))
    fs.add("/var/lib/postgresql/15/main/base/16384/2619", 200 * KiB, PROTECTED, fs.age(0, 1))
    fs.add("/srv/www/index.html", 6 * KiB, PROTECTED, 90)
    fs.add("/opt/tool/bin/tool", 120 * KiB, PROTECTED, 200)
    return Scenario(
        name="debian-like",
        seed=seed,
        files=tuple(fs.files),
        description="A Debian 12 container that has been in use for months.",
    )


PROFILES: dict[str, tuple[Callable[[int], Scenario], int]] = {
    "heavy-mix": (_heavy_mix, 7),
    "many-small": (_many_small, 11),
    "few-large": (_few_large, 13),
    "debian-like": (_debian_like, 42),
}


@cache
def build_profile(name: str) -> Scenario:
    """Build a built-in profile (its seed is part of its definition); built once per process."""
    make, seed = PROFILES[name]
    return make(seed)
