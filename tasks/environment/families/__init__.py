"""Scenario families: seeded layouts of one kind of clutter, and the strategies that clear it.

A family is one function, ``add(files, rng) -> strategies``: it writes its junk files and
the protected files that look like junk (a current log beside rotated ones, sources
beside their bytecode, the newest backup beside old ones) into ``files``, and returns its
strategies: each in the agent's words, with the ``Rule`` it states (folder, name, age),
which selects exactly the family's junk. A generated
scenario (``generator.py``) mixes a few families under one seed. Registering a family is
a line in ``FAMILIES``.
"""

from __future__ import annotations

from agir_retrain.tasks.environment.families.base import Family, FileSet, Rule, Strategy
from agir_retrain.tasks.environment.families.clutter import (
    build_artifacts,
    bytecode,
    core_dumps,
    old_backups,
    temp_files,
    thumbnails,
)
from agir_retrain.tasks.environment.families.logs import rotated_logs
from agir_retrain.tasks.environment.families.packages import language_caches, package_cache

FAMILIES: dict[str, Family] = {
    "rotated-logs": rotated_logs,
    "package-cache": package_cache,
    "language-caches": language_caches,
    "core-dumps": core_dumps,
    "bytecode": bytecode,
    "temp-files": temp_files,
    "build-artifacts": build_artifacts,
    "old-backups": old_backups,
    "thumbnails": thumbnails,
}

__all__ = ["FAMILIES", "Family", "FileSet", "Rule", "Strategy"]
