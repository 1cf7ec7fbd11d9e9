"""Collecting: runs written in the agent's v4 format, read back whole, judged as evaluate judges.

A scripted policy (hand-written replies with known effects) stands in for a model where
the outcome must be known; the tiny model drives the real sampling path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agir_retrain.tasks.agent.collect import collect
from agir_retrain.tasks.agent.episodes import LocalEpisodes
from agir_retrain.tasks.agent.outcomes import judge_episode
from agir_retrain.tasks.environment.contract import Completion, EvalTask
from agir_retrain.tasks.environment.generator import generate_scenario
from agir_retrain.tasks.environment.scenario import load_scenario
from agir_retrain.tasks.evaluation.episodes import episode_groups, run_groups_locally
from agir_retrain.tasks.runs.reader import read_run_file
from agir_retrain.tasks.settings.collect import CollectConfig

LIST = '```json\n{"strategies": ["Delete the core dumps in /var/crash", "Clear /tmp"]}\n```'
CLEANS_CRASH = (
    "```python\nimport os\nfor root, _, files in os.walk('/var/crash'):\n"
    "    for name in files:\n        os.remove(os.path.join(root, name))\n"
    "        print('removed', name)\n```"
)
HALF_THEN_CRASH = (  # deletes one junk file, then fails: the next attempt sees it gone
    "```python\nimport os\nos.remove('/var/log/syslog.1.gz')\nprint('one')\n"
    "raise SystemExit(3)\n```"
)
DAMAGES = "```python\nimport os\nos.remove('/etc/app/settings.conf')\nprint('oops')\n```"
SCRIPT = {  # (strategy index, attempt) -> reply; the strategy list is replied on the 2nd try
    (0, 1): "Let me think about it.",
    (0, 2): HALF_THEN_CRASH,
    (0, 3): CLEANS_CRASH,
    (1, 1): DAMAGES,
    (1, 2): "```python\nprint('nothing to do')\n```",
    (1, 3): "```python\nimport os\nos.remove('/tmp/build-3f9a/output.o')\nprint('x')\n```",
}


def scripted(requests):
    replies = {}
    for request in requests:
        key = request.task_id
        if "/strategies/" in key:
            replies[key] = "no list, sorry" if key.endswith("/1") else LIST
        else:
            _, _, strategy, attempt = key.rsplit("/", 3)
            replies[key] = SCRIPT[int(strategy), int(attempt)]
    return replies


def _config(out: Path, **fields) -> CollectConfig:
    base = {
        "scenarios": ["heavy-mix"],
        "runs_per_task": 2,
        "out": str(out),
        "workers": 1,
        "environment": {"limits": {"wall_s": 5}},
    }
    return CollectConfig.model_validate(base | fields)


@pytest.fixture(scope="module")
def scripted_collection(tmp_path_factory, bwrap_works):
    out = tmp_path_factory.mktemp("collect")
    config = _config(out)
    with LocalEpisodes(config.environment, 1) as episodes:
        report = collect(config, sample=scripted, run_episodes=episodes)
    return config, report


@pytest.fixture(scope="module")
def bwrap_works():
    from agir_retrain.tasks.environment.sandbox import SandboxError
    from agir_retrain.tasks.environment.sandbox_bwrap import BwrapSandbox

    try:
        BwrapSandbox()
    except SandboxError as exc:
        pytest.skip(f"bubblewrap cannot run here: {exc}")


def _run_files(out: str) -> list[Path]:
    return sorted(Path(out, "runs").rglob("*.json"))


def _attempt_lines(out: str) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(Path(out, "attempts").rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_the_reader_takes_every_run_as_written(scripted_collection):
    config, report = scripted_collection
    files = _run_files(config.out)
    assert len(files) == report.runs_written == 2
    classes = []
    for path in files:
        result = read_run_file(str(path))
        assert not result.quarantined, result.quarantined
        assert [r.strategy for r in result.runs] == [
            "Delete the core dumps in /var/crash",
            "Clear /tmp",
        ]
        classes += [r.run_class.value for r in result.runs]
        document = json.loads(path.read_text())
        assert document["env_agent"]["model_name"] == "base"  # KiB, new minus old
    # strategy 0: failures then a success (mixed); strategy 1: damage, no-op, then success
    assert sorted(classes) == sorted(["mixed", "mixed"] * 2)
    assert report.runs_by_class == {"first_try": 0, "mixed": 4, "never_freed": 0, "no_runnable": 0}
    assert report.attempts_by_outcome == {
        "ast_fail": 2,
        "compile_fail": 0,
        "container_fail": 2,
        "deletion_fail": 4,
        "success": 4,
    }


def test_space_freed_is_recorded_in_kib_as_the_agent_does(scripted_collection):
    config, _ = scripted_collection
    document = json.loads(_run_files(config.out)[0].read_text())
    crash = sum(
        f.bytes for f in load_scenario("heavy-mix").files if f.path.startswith("/var/crash/")
    )
    first, second = document["copy_strat_agents"]
    assert first["space_freed"] == round(crash / 1024, 3)
    assert second["space_freed"] > 0
    assert document["space_freed"] == first["space_freed"] + second["space_freed"]


def test_a_failed_attempt_leaves_its_changes_for_the_next(scripted_collection):
    config, _ = scripted_collection
    lines = [line for line in _attempt_lines(config.out) if line["run_index"] == 0]
    third = next(line for line in lines if line["strategy"] == 0 and line["attempt"] == 3)
    paths = {f["path"] for f in third["scenario"]["files"]}
    assert "/var/log/syslog.1.gz" not in paths  # removed by attempt 2 before it crashed
    assert "/var/log/syslog.2.gz" in paths


def test_every_attempt_is_judged_as_evaluate_judges_its_program(scripted_collection, tmp_path):
    """Each attempt's program, run by evaluate in the state it started from, gives the same."""
    config, _ = scripted_collection
    tasks, completions, expected = [], [], {}
    for n, line in enumerate(_attempt_lines(config.out)):
        if line["outcome"] in ("ast_fail", "compile_fail"):
            continue
        state = tmp_path / f"state-{n}.json"
        state.write_text(json.dumps(line["scenario"]))
        task_id = f"attempt-{n}"
        tasks.append(EvalTask(task_id=task_id, prompt=tuple(line["prompt"]), scenario=str(state)))
        completions.append(
            Completion(task_id=task_id, model="base", sample=0, completion=line["reply"])
        )
        expected[task_id] = (line["outcome"], line["freed_bytes"])
    groups = episode_groups(
        tasks, completions, {t.scenario: load_scenario(t.scenario) for t in tasks}
    )
    episodes = run_groups_locally(groups, config.environment, 1)
    judged = {e.task_id: judge_episode(e) for e in episodes}
    assert {k: (j.outcome.value, j.freed_bytes) for k, j in judged.items()} == expected
    assert len(expected) == 10  # 2 runs x (2 + 3 attempts that ran)


def test_a_rerun_skips_written_runs_and_replays_a_missing_one_identically(scripted_collection):
    config, _ = scripted_collection
    files = _run_files(config.out)
    before = {p: p.read_bytes() for p in files}
    with LocalEpisodes(config.environment, 1) as episodes:
        again = collect(config, sample=scripted, run_episodes=episodes)
    assert (again.already_written, again.runs_written) == (2, 0)
    files[1].unlink()
    with LocalEpisodes(config.environment, 1) as episodes:
        resumed = collect(config, sample=scripted, run_episodes=episodes)
    assert (resumed.already_written, resumed.runs_written) == (1, 1)
    assert {p: p.read_bytes() for p in _run_files(config.out)} == before


def test_the_tiny_model_plays_through_the_real_sampler(tmp_path, tiny_model, bwrap_works):
    """Sampling for real: the same seeds give the same files; every file reads whole."""
    from agir_retrain.tasks.evaluation.sampling import (
        CompletionSampler,
        SamplerSpec,
        plan_sample_batches,
    )

    spec = SamplerSpec(
        base_model=tiny_model,
        base_label="tiny",
        adapters=(),
        temperature=1.0,
        max_new_tokens=24,
        max_prompt_tokens=256,
        max_prompt_chars_per_message=2000,
        seed=3,
    )
    sampler = CompletionSampler(spec)

    def sample(requests):
        batches = plan_sample_batches(requests, 4)
        return {c.task_id: c.completion for b in batches for c in sampler.sample(b)}

    outs = []
    for name in ("a", "b"):
        config = _config(
            tmp_path / name,
            scenarios=["gen-3"],
            strategies="given",
            model_name="tiny",
            runs_per_task=2,
            max_attempts=2,
            seed=3,
        )
        with LocalEpisodes(config.environment, 1) as episodes:
            report = collect(config, sample=sample, run_episodes=episodes)
        assert report.runs_written == 2
        outs.append({p.name: p.read_bytes() for p in _run_files(config.out)})
    assert outs[0] == outs[1]
    for path in _run_files(str(tmp_path / "a")):
        result = read_run_file(str(path))
        assert not result.quarantined
        assert len(result.runs) == len(generate_scenario(3).strategies)


def test_held_out_tasks_ask_what_collect_asks(tmp_path):
    """A held-out task's prompt is a copy agent's first prompt in a collection, to the byte."""
    from agir_retrain.tasks.agent.heldout import heldout_tasks

    config = _config(tmp_path, scenarios=["gen-3"], strategies="given", runs_per_task=1)
    with LocalEpisodes(config.environment, 1) as episodes:
        collect(config, sample=lambda rs: {r.task_id: "no code" for r in rs}, run_episodes=episodes)
    first = {
        f"gen-3/s{line['strategy']}": tuple(line["prompt"])
        for line in _attempt_lines(config.out)
        if line["attempt"] == 1
    }
    tasks = heldout_tasks([3], "agir")
    assert {t.task_id: t.prompt for t in tasks} == first
    assert {t.scenario for t in tasks} == {"gen-3"}
    assert len(tasks) == len(generate_scenario(3).strategies)


def test_each_rule_frees_exactly_its_familys_junk(bwrap_works):
    """The reference program of every strategy succeeds and damages nothing, in every family."""
    from agir_retrain.tasks.agent.reference import reference_program
    from agir_retrain.tasks.environment.episode import run_episode
    from agir_retrain.tasks.environment.families import FAMILIES

    config = _config(Path("unused"))
    seen: set[str] = set()
    for seed in range(40):
        generated = generate_scenario(seed)
        for family, rule in zip(generated.families, generated.rules, strict=True):
            if family in seen:
                continue
            seen.add(family)
            program = reference_program(rule, style=seed)
            episode = run_episode(
                task_id=family,
                model="reference",
                sample=0,
                completion=program,
                scenario=generated.scenario,
                settings=config.environment,
            )
            assert episode.success, (family, episode.stderr_tail, episode.protected_damaged)
            assert episode.protected_damaged == ()
            junk = [
                f
                for f in generated.scenario.files
                if f.kind.value == "junk" and f.path.startswith(rule.folder + "/")
            ]
            assert episode.junk_bytes_freed == sum(f.bytes for f in junk), family
    assert seen == set(FAMILIES)


def test_the_reference_agent_writes_a_corpus_that_reads_whole(tmp_path, bwrap_works):
    from agir_retrain.tasks.agent.reference import reference_policy

    config = _config(
        tmp_path,
        scenarios=[],
        generated=6,
        strategies="given",
        policy="reference",
        runs_per_task=2,
    )
    with LocalEpisodes(config.environment, 1) as episodes:
        report = collect(config, sample=reference_policy, run_episodes=episodes)
    assert report.model_name == "reference"
    assert report.runs_by_class["first_try"] > 0
    assert report.runs_by_class["mixed"] > 0  # first attempts with a mistake, then fixed
    assert report.runs_by_class["no_runnable"] == report.runs_by_class["never_freed"] == 0
    classes = [
        r.run_class.value for p in _run_files(config.out) for r in read_run_file(str(p)).runs
    ]
    assert sorted(classes) == sorted([k for k, n in report.runs_by_class.items() for _ in range(n)])


def test_a_sandbox_that_cannot_run_excludes_the_run_instead_of_failing_it(tmp_path, bwrap_works):
    """No episode folder can be made (the work dir is a file): the harness's failure, never
    the model's; the run is not written, and the report counts it."""
    from agir_retrain.tasks.agent.reference import reference_policy
    from agir_retrain.tasks.environment.episode import sandbox_for

    not_a_folder = tmp_path / "work"
    not_a_folder.mkdir()
    config = _config(
        tmp_path / "out", scenarios=["gen-2"], strategies="given", policy="reference",
        runs_per_task=1,
        environment={"work_dir": str(not_a_folder), "harness_retries": 0, "limits": {"wall_s": 5}},
    )  # fmt: skip
    sandbox_for(config.environment)  # checked (once per process) while the folder is one
    not_a_folder.rmdir()
    not_a_folder.write_text("")
    with LocalEpisodes(config.environment, 1) as episodes:
        report = collect(config, sample=reference_policy, run_episodes=episodes)
    assert (report.runs_written, report.runs_excluded) == (0, 1)
    assert report.attempts_by_outcome["container_fail"] == 0  # nothing booked as the model's
    assert not _run_files(config.out)
