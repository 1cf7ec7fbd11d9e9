"""Episodes in sequence: a program runs on the scenario copy that earlier programs left behind.

The agent's container is not reset between its code attempts, so ``collect`` needs each
attempt to start from the state the previous ones left. That state is carried as a
scenario of its own (``scenario_after``): the junk still there (at its new size when it
was truncated) and the protected files still intact. A scenario is data, so the state
an attempt started from can be written as a scenario file and the same program judged
again by ``evaluate --completions``, with the same result.

What the state leaves out, on purpose: files a program created (they are counted once,
as ``new_bytes`` of the attempt that made them) and protected files it damaged (counted
once, as that attempt's damage); the next attempt starts without them.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from agir_retrain.tasks.environment.episode import (
    EPISODE_PREFIX,
    _remove,
    _sweep_once,
    default_work_dir,
    extract_program,
    limits_from,
    make_sandbox,
    run_episode,
)
from agir_retrain.tasks.environment.measure import _hash_regular_file, is_success, measure
from agir_retrain.tasks.environment.records import Episode, FileKind, Scenario
from agir_retrain.tasks.environment.scenario import expected_digests, materialise
from agir_retrain.tasks.settings.environment import EnvironmentSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class CarriedEpisode:
    """One program's episode, and the scenario state it left for the next program."""

    episode: Episode
    after: Scenario


def scenario_after(scenario: Scenario, root: Path) -> Scenario:
    """The scenario as the copy under ``root`` now holds it (see the module docstring)."""
    digests = expected_digests(scenario)
    base = os.fspath(root)
    kept = []
    for f in scenario.files:
        try:
            info = os.lstat(base + f.path)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        if f.kind is FileKind.JUNK:
            # A truncated file keeps its first bytes, which are its contents at the new size.
            kept.append(replace(f, bytes=min(f.bytes, info.st_size)))
        elif info.st_size == f.bytes and _hash_regular_file(base + f.path) == digests[f.path]:
            kept.append(f)
    return replace(scenario, files=tuple(kept))


def run_carried_episode(
    *,
    task_id: str,
    model: str,
    sample: int,
    completion: str,
    scenario: Scenario,
    settings: EnvironmentSettings,
) -> CarriedEpisode:
    """Run one completion's program on ``scenario`` and return its episode and the state after.

    The episode is exactly ``run_episode``'s for the same completion and scenario.
    """
    program = extract_program(completion)
    if program is None:  # nothing runs: the state is unchanged
        episode = run_episode(
            task_id=task_id,
            model=model,
            sample=sample,
            completion=completion,
            scenario=scenario,
            settings=settings,
        )
        return CarriedEpisode(episode=episode, after=scenario)
    sandbox = make_sandbox(settings.backend, settings.interpreter, settings.docker_image)
    work_dir = settings.work_dir or default_work_dir()
    _sweep_once(work_dir)
    folder = Path(tempfile.mkdtemp(prefix=f"{EPISODE_PREFIX}{os.getpid()}-", dir=work_dir))
    try:
        clock = settings.clock if settings.clock is not None else time.time()
        materialise(scenario, folder / "root", clock, owner=sandbox.owner)
        (folder / "program.py").write_text(program, encoding="utf-8", errors="surrogatepass")
        result = sandbox.run(folder, limits_from(settings))
        found = measure(scenario, folder / "root")
        after = scenario_after(scenario, folder / "root")
    finally:
        _remove(folder)
    episode = Episode(
        task_id=task_id,
        model=model,
        sample=sample,
        code_found=True,
        exit_code=result.exit_code,
        stopped_by=result.stopped_by,
        junk_bytes_total=found.junk_bytes_total,
        junk_bytes_freed=found.junk_bytes_freed,
        new_bytes=found.new_bytes,
        protected_damaged=found.protected_damaged,
        freed_share=found.freed_share,
        success=is_success(result.exit_code, found.freed_share, found.protected_damaged),
        seconds=round(result.seconds, 3),
        stdout_tail=result.stdout_tail,
        stderr_tail=result.stderr_tail,
        scenario=scenario.name,
        backend=sandbox.name,
    )
    return CarriedEpisode(episode=episode, after=after)
