"""Texts for synthetic AGIR runs, shaped like the agent's own prompts and replies.

The templates follow the agent's v4 prompt templates (see ``docs/run-format.md``);
the listings and code are random but plausible, drawn from a seeded ``Random``.
"""

from __future__ import annotations

import random

from agir_retrain.tasks import agir_prompts
from agir_retrain.tasks.agir_prompts import (  # noqa: F401 (synth's writers use them here)
    CODE_REGEN,
    CODE_REQUEST,
    SPECIAL_EGC_REQUEST,
    STRATS_REGEN,
    STRATS_REQUEST,
    SYSTEM_PROMPT,
    fenced,
    special_env_block,
    strategies_reply,
)

REGEN_CONTEXT = {
    "ast_fail": ("a Python AST compiler", "Syntax Error: invalid syntax (<unknown>, line {n})"),
    "compile_fail": ("a Python native compiler", "Syntax Error: unexpected indent (line {n})"),
    "container_fail": ("a Docker container", "Traceback: PermissionError: [Errno 13] /proc/{n}"),
    "deletion_fail": ("a Docker container", "No files are being freed or deleted"),
}

STRATEGIES = (
    "Remove rotated log files older than {n} days from /var/log",
    "Clear the apt package cache under /var/cache/apt/archives",
    "Delete temporary files in /tmp not accessed for {n} hours",
    "Remove Python bytecode caches (__pycache__) under /usr/lib",
    "Truncate journal files in /var/log/journal to the last {n} MB",
    "Delete core dumps found under /var/crash",
    "Remove orphaned .swp and .bak files from /home",
    "Clean pip and npm caches in /root/.cache",
    "Remove duplicate files found by content hash under /srv/data",
    "Compress and then delete uncompressed archives larger than {n} MB in /opt",
)

_DIRS = (
    "/var/log",
    "/tmp",
    "/var/cache/apt",
    "/usr/lib/python3",
    "/home/user",
    "/opt/app",
    "/srv/data",
)
_EXTS = (".log", ".gz", ".tmp", ".pyc", ".deb", ".bak", ".json", ".swp")


def strategy(rng: random.Random) -> str:
    """A strategy sentence."""
    return rng.choice(STRATEGIES).format(n=rng.randint(2, 90))


def listing(rng: random.Random, target_chars: int) -> str:
    """A container file listing of about ``target_chars`` (what getter codes print)."""
    lines: list[str] = []
    size = 0
    while size < target_chars:
        line = (
            f"{rng.randint(1, 9_999_999):>9} {rng.choice(_DIRS)}/"
            f"{rng.getrandbits(40):010x}{rng.choice(_EXTS)}"
        )
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def basic_env_block(rng: random.Random) -> str:
    """A ``<BasicEnvInfos>`` message with random memory and storage figures (MiB)."""
    total_storage = float(rng.choice((51_200, 102_400, 204_800)))
    available = round(total_storage * rng.uniform(0.05, 0.6), 1)
    return agir_prompts.basic_env_block(
        total_memory=15953.0,
        available_memory=float(rng.randint(2000, 15000)),
        running_memory=float(rng.randint(500, 9000)),
        total_storage=total_storage,
        available_storage=available,
    )


def getter_code(rng: random.Random) -> str:
    """An environment-discovery script (bare code, as ``special_env_info_getter_codes`` holds)."""
    directory = rng.choice(_DIRS)
    return (
        "import os\n"
        f"for root, _, files in os.walk('{directory}'):\n"
        "    for name in files:\n"
        "        path = os.path.join(root, name)\n"
        "        print(os.path.getsize(path), path)\n"
    )


def code(rng: random.Random) -> str:
    """A cleanup script with random constants, so two draws rarely match."""
    directory = rng.choice(_DIRS)
    ext = rng.choice(_EXTS)
    days = rng.randint(1, 60)
    return (
        "import os, time\n"
        f"cutoff = time.time() - {days} * 86400\n"
        "freed = 0\n"
        f"for root, _, files in os.walk('{directory}'):\n"
        "    for name in files:\n"
        f"        if name.endswith('{ext}'):\n"
        "            path = os.path.join(root, name)\n"
        "            if os.path.getmtime(path) < cutoff:\n"
        "                freed += os.path.getsize(path)\n"
        "                os.remove(path)\n"
        "print('freed', freed, 'bytes')\n"
    )
