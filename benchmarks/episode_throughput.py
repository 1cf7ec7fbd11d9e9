"""Episodes per second of the sandbox backends, against plain `python` in a temp folder.

    .venv/bin/python benchmarks/episode_throughput.py                  # 200 episodes, 2 workers
    .venv/bin/python benchmarks/episode_throughput.py --episodes 400 --workers 1 2

Each episode is the whole thing the evaluation pays for: the episode's own bounded
filesystem made, a fresh copy of the `debian-like` profile written into it, one cleanup
program run, the copy measured (fail-closed) and freed. The same
programs run on each backend in the same run:
- plain (the floor): the host's python in an episode folder on /dev/shm (a tmpfs, as the
  sandboxes' own filesystems are), NO isolation and no bounds; the programs find their
  files under `$SCENARIO_ROOT`, which the sandboxes leave unset (so `/`);
- bwrap: the default backend;
- docker: when an engine answers and the sandbox image can be built (`--docker`).
Targets (issue 13): bwrap within 2x of plain, and at least 20 episodes/s on 2 cores.
Results go to stdout and to bench-out/episode_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

from agir_retrain.tasks.environment.episode import run_episode
from agir_retrain.tasks.environment.sandbox import PlainSandbox, Sandbox, SandboxError
from agir_retrain.tasks.environment.scenario import load_scenario
from agir_retrain.tasks.settings.environment import EnvironmentSettings

OUT = Path(__file__).resolve().parent.parent / "bench-out"
PROFILE = "debian-like"
PREFIX = 'import os\nROOT = os.environ.get("SCENARIO_ROOT", "")\n'
PROGRAMS = {  # cleanup programs of the kinds agents write, each working under ROOT
    "rotated-logs": PREFIX
    + (
        "import glob\n"
        "for p in glob.glob(ROOT + '/var/log/**/*.gz', recursive=True) + glob.glob(ROOT + '/var/log/*.1'):\n"
        "    os.remove(p)\n"
    ),
    "apt-and-pip": PREFIX
    + (
        "import shutil\n"
        "for d in ('/var/cache/apt/archives', '/root/.cache/pip'):\n"
        "    shutil.rmtree(ROOT + d, ignore_errors=True)\n"
        "print('cleaned')\n"
    ),
    "older-than-30-days": PREFIX
    + (
        "import time\n"
        "now = time.time()\n"
        "for top in ('/var', '/tmp', '/root/.cache'):\n"
        "    for folder, _, files in os.walk(ROOT + top):\n"
        "        for name in files:\n"
        "            path = os.path.join(folder, name)\n"
        "            if now - os.path.getmtime(path) > 30 * 86400:\n"
        "                os.remove(path)\n"
    ),
    "survey-only": PREFIX
    + (
        "total = 0\n"
        "for top in ('/var', '/tmp', '/home', '/root', '/opt', '/srv', '/etc'):\n"
        "    for folder, _, files in os.walk(ROOT + top):\n"
        "        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)\n"
        "print(total)\n"
    ),
}


@cache
def _sandbox(backend: str) -> Sandbox:
    settings = EnvironmentSettings()
    if backend == "plain":  # its copies on a tmpfs, as the sandboxes' own filesystems are
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        return PlainSandbox(settings.interpreter, work_dir=shm, i_know_this_is_unsafe=True)
    from agir_retrain.tasks.environment.episode import sandbox_for

    return sandbox_for(settings.model_copy(update={"backend": backend}))


CPUACCT = Path("/sys/fs/cgroup/cpuacct")  # cgroup v1: CPU time of a whole process tree


def _join_cgroup(procs: str) -> None:
    """Pool initializer: the worker, and every process it starts, is accounted in the cgroup."""
    Path(procs).write_text(str(os.getpid()))


def one_episode(backend: str, index: int) -> tuple[float, float]:
    """Run one episode; return (freed share, wall seconds) of the whole episode."""
    name = sorted(PROGRAMS)[index % len(PROGRAMS)]
    start = time.perf_counter()
    episode = run_episode(
        task_id=name,
        model="bench",
        sample=index,
        completion=f"```python\n{PROGRAMS[name]}```",
        scenario=load_scenario(PROFILE),
        settings=EnvironmentSettings(backend="docker" if backend == "docker" else "bwrap"),
        sandbox=_sandbox(backend),
    )
    if episode.exit_code != 0:
        raise RuntimeError(f"{backend} {name}: exit {episode.exit_code}: {episode.stderr_tail}")
    return episode.freed_share, time.perf_counter() - start


def measure(backend: str, episodes: int, workers: int) -> dict:
    """Episodes/s of one backend with a pool of ``workers`` processes (warmed up first).

    Where a cpuacct cgroup can be made, the workers run in it, so the CPU time of every
    process of every episode is counted (sandboxed programs included; docker's containers
    are the engine's children and are not).
    """
    group = CPUACCT / f"agir-episode-bench-{os.getpid()}-{backend}-{workers}"
    try:
        group.mkdir()
    except OSError:
        group = None
    initializer = (_join_cgroup, (str(group / "cgroup.procs"),)) if group else (None, ())
    try:
        with ProcessPoolExecutor(
            workers, initializer=initializer[0], initargs=initializer[1]
        ) as pool:
            list(pool.map(one_episode, [backend] * workers * 2, range(workers * 2)))  # warm-up
            if group:
                (group / "cpuacct.usage").write_text("0")
            start = time.perf_counter()
            results = list(pool.map(one_episode, [backend] * episodes, range(episodes)))
            wall = time.perf_counter() - start
            cpu_ns = int((group / "cpuacct.usage").read_text()) if group else None
    finally:
        if group:
            group.rmdir()
    shares = [share for share, _ in results]
    seconds = sorted(s for _, s in results)
    cpu_ms = None if cpu_ns is None or backend == "docker" else cpu_ns / 1e6 / episodes
    return {
        "backend": backend,
        "workers": workers,
        "episodes": episodes,
        "episodes_per_s": episodes / wall,
        "median_episode_ms": 1000 * seconds[len(seconds) // 2],
        "cpu_ms_per_episode": cpu_ms,
        "mean_freed_share": sum(shares) / len(shares),
    }


def main() -> None:
    """Measure each backend and print the table with ratios to the plain floor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--docker", action="store_true", help="also measure the docker backend")
    parser.add_argument(
        "--docker-episodes", type=int, default=40, help="episodes on docker (~1-2 s each)"
    )
    args = parser.parse_args()
    backends = ["plain", "bwrap"] + (["docker"] if args.docker else [])
    rows = []
    for workers in args.workers:
        for backend in backends:
            try:
                count = args.docker_episodes if backend == "docker" else args.episodes
                rows.append(measure(backend, count, workers))
            except SandboxError as exc:
                print(f"{backend}: skipped ({exc})")
    print(f"\n{PROFILE}, materialisation included, {os.cpu_count()} CPUs")
    print(
        f"{'backend':<8} {'workers':>7} {'episodes/s':>11} {'median ms':>10} {'x plain':>8} "
        f"{'CPU ms/ep':>10} {'CPU-bound eps/s':>16} {'freed':>6}"
    )
    for row in rows:
        floor = next(r for r in rows if r["backend"] == "plain" and r["workers"] == row["workers"])
        row["ratio_to_plain"] = floor["episodes_per_s"] / row["episodes_per_s"]
        cpu = row["cpu_ms_per_episode"]
        # what the CPUs allow when nothing else runs: every core busy with episodes
        bound = None if cpu is None else 1000 * (os.cpu_count() or 1) / cpu
        row["cpu_bound_episodes_per_s"] = bound
        cpu_text = "n/a" if cpu is None else f"{cpu:.1f}"
        bound_text = "n/a" if bound is None else f"{bound:.1f}"
        print(
            f"{row['backend']:<8} {row['workers']:>7} {row['episodes_per_s']:>11.1f} "
            f"{row['median_episode_ms']:>10.1f} {row['ratio_to_plain']:>8.2f} "
            f"{cpu_text:>10} {bound_text:>16} {row['mean_freed_share']:>6.3f}"
        )
    shares = {round(r["mean_freed_share"], 9) for r in rows}
    print("same freed share on every backend:", len(shares) == 1)
    OUT.mkdir(exist_ok=True)
    (OUT / "episode_throughput.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
