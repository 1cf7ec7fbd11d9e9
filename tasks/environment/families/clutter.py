"""Clutter families: core dumps, bytecode, temporary files, build output, backups, thumbnails.

Each keeps beside its junk something that looks like it and must survive: a source file
named ``core.py``, the ``.py`` files beside ``__pycache__``, a temp file still in use, the
sources of a build, the newest backup, the user's own pictures.
"""

from __future__ import annotations

import random

from agir_retrain.tasks.environment.families.base import (
    APPS,
    JUNK,
    PROTECTED,
    USERS,
    FileSet,
    Rule,
    Strategy,
    hexname,
    size,
)

_PROGRAMS = ("python3", "worker", "postgres", "node", "java", "ffmpeg")
_MODULES = ("models", "views", "utils", "api", "cli", "db", "tasks", "config")


def _home(rng: random.Random) -> str:
    user = rng.choice(USERS)
    return "/root" if user == "ops" else f"/home/{user}"


def core_dumps(files: FileSet, rng: random.Random) -> list[Strategy]:
    """Crash dumps in /var/crash; an application's ``core`` module is not one."""
    for _ in range(rng.randint(2, 4)):
        program = rng.choice(_PROGRAMS)
        files.add(
            f"/var/crash/core.{program}.{rng.randint(1000, 65000)}",
            size(rng, 300, 1500),
            JUNK,
            rng.uniform(1, 60),
        )
    app = rng.choice(APPS)
    files.add(f"/opt/{app}/lib/core.py", size(rng, 4, 30), PROTECTED, rng.uniform(10, 300))
    text = rng.choice(
        (
            "Delete the core dump files in /var/crash",
            "Remove crash dumps (core.*) from /var/crash",
        )
    )
    return [Strategy(text=text, rule=Rule(folder="/var/crash", prefix="core."))]


def bytecode(files: FileSet, rng: random.Random) -> list[Strategy]:
    """``__pycache__`` folders of an application; its ``.py`` sources must stay."""
    app = rng.choice(APPS)
    root = f"/opt/{app}"
    for package in rng.sample(_MODULES, rng.randint(2, 3)):
        for module in rng.sample(_MODULES, rng.randint(2, 4)):
            files.add(f"{root}/{package}/{module}.py", size(rng, 2, 12), PROTECTED, 90)
            files.add(
                f"{root}/{package}/__pycache__/{module}.cpython-311.pyc",
                size(rng, 4, 40),
                JUNK,
                rng.uniform(1, 60),
            )
    text = rng.choice(
        (
            f"Remove the __pycache__ folders under {root}",
            f"Delete compiled Python bytecode (.pyc files) under {root}",
        )
    )
    return [Strategy(text=text, rule=Rule(folder=root, suffixes=(".pyc",)))]


def temp_files(files: FileSet, rng: random.Random) -> list[Strategy]:
    """Old files in a temporary folder; the ones written in the last day are in use."""
    folder = rng.choice(("/tmp", "/var/tmp"))
    cutoff = rng.choice((2, 3, 7))
    for _ in range(rng.randint(4, 8)):
        name = f"tmp{hexname(rng, 8)}{rng.choice(('.tmp', '.dat', '', '.part'))}"
        files.add(f"{folder}/{name}", size(rng, 20, 600), JUNK, rng.uniform(cutoff + 0.5, 40))
    for _ in range(rng.randint(1, 2)):
        name = f"session-{hexname(rng, 6)}.tmp"
        files.add(f"{folder}/{name}", size(rng, 5, 50), PROTECTED, rng.uniform(0, 0.8))
    text = rng.choice(
        (
            f"Delete files in {folder} older than {cutoff} days",
            f"Remove temporary files from {folder} that were last modified more than "
            f"{cutoff} days ago",
        )
    )
    return [Strategy(text=text, rule=Rule(folder=folder, older_than_days=cutoff))]


def build_artifacts(files: FileSet, rng: random.Random) -> list[Strategy]:
    """A project's ``build/`` output; its sources stay."""
    project = f"{_home(rng)}/src/{rng.choice(APPS)}"
    for module in rng.sample(_MODULES, rng.randint(3, 5)):
        files.add(f"{project}/src/{module}.c", size(rng, 4, 20), PROTECTED, rng.uniform(1, 90))
        files.add(f"{project}/build/{module}.o", size(rng, 50, 300), JUNK, rng.uniform(0.5, 30))
    files.add(f"{project}/build/app.bin", size(rng, 300, 1200), JUNK, rng.uniform(0.5, 30))
    text = rng.choice(
        (
            f"Delete the build output folder {project}/build",
            f"Remove compiled object files and binaries in {project}/build",
        )
    )
    return [Strategy(text=text, rule=Rule(folder=f"{project}/build"))]


def old_backups(files: FileSet, rng: random.Random) -> list[Strategy]:
    """Nightly database dumps: old ones are junk, the newest few must be kept."""
    database = rng.choice(("orders", "users", "crm", "inventory"))
    folder = f"/srv/backups/{database}"
    keep_days = rng.choice((3, 5, 7))
    for day in range(1, keep_days + rng.randint(2, 7)):  # some dumps older than kept
        kind = JUNK if day > keep_days else PROTECTED
        age = day - 1 + rng.uniform(0.05, 0.5)  # day k's dump is between k-1 and k days old
        files.add(f"{folder}/{database}-day{day:02d}.sql.gz", size(rng, 100, 500), kind, age)
    text = rng.choice(
        (
            f"Delete database backups in {folder} older than {keep_days} days",
            f"Remove .sql.gz dumps in {folder} that are more than {keep_days} days old, "
            "keeping the recent ones",
        )
    )
    return [
        Strategy(
            text=text, rule=Rule(folder=folder, suffixes=(".sql.gz",), older_than_days=keep_days)
        )
    ]


def thumbnails(files: FileSet, rng: random.Random) -> list[Strategy]:
    """A desktop thumbnail cache; the pictures themselves are the user's."""
    home = _home(rng)
    cache = f"{home}/.cache/thumbnails"
    for _ in range(rng.randint(5, 12)):
        files.add(
            f"{cache}/{rng.choice(('normal', 'large'))}/{hexname(rng, 32)}.png",
            size(rng, 5, 60),
            JUNK,
            rng.uniform(1, 200),
        )
    for n in range(rng.randint(1, 3)):
        files.add(f"{home}/Pictures/photo-{n:03d}.png", size(rng, 100, 600), PROTECTED, 40)
    text = rng.choice(
        (
            f"Clear the thumbnail cache in {cache}",
            f"Delete all cached thumbnails under {cache}",
        )
    )
    return [Strategy(text=text, rule=Rule(folder=cache, suffixes=(".png",)))]
