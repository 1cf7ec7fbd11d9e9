"""The agent's loop as a state machine: messages, tags, retries and outcomes, no sandbox."""

from __future__ import annotations

import pytest

from agir_retrain.tasks.agent.outcomes import AttemptOutcome, check_reply, judge_episode
from agir_retrain.tasks.agent.play import AgentTask, LoopLimits, RunPlay, StrategySource
from agir_retrain.tasks.agent.prompts import AGIR, COMPACT
from agir_retrain.tasks.environment.contract import Episode
from agir_retrain.tasks.environment.generator import generate_scenario

GEN = generate_scenario(4)
TASK = AgentTask(
    task_id="gen-4", scenario=GEN.scenario, scenario_ref="gen-4", strategies=GEN.strategies
)
LIST = '```json\n{"strategies": ["Delete old logs in /var/log", "Clear /tmp"]}\n```'


def _run(source=StrategySource.MODEL, prompts=AGIR, **limits) -> RunPlay:
    return RunPlay(
        task=TASK, run_index=0, prompts=prompts, source=source, limits=LoopLimits(**limits)
    )


def _episode(**fields) -> Episode:
    row = {
        "task_id": "t",
        "model": "m",
        "sample": 0,
        "code_found": True,
        "exit_code": 0,
        "stopped_by": None,
        "junk_bytes_total": 1000,
        "junk_bytes_freed": 0,
        "new_bytes": 0,
        "protected_damaged": (),
        "freed_share": 0.0,
        "success": False,
        "seconds": 0.1,
        "stdout_tail": "ok\n",
        "stderr_tail": "",
    }
    return Episode(**(row | fields))


def _tags(history):
    return [tag for _, tag in history]


def test_an_unparsable_strategy_reply_is_retried_with_the_agents_regeneration_request():
    run = _run()
    key, prompt = run.request()
    assert key == "gen-4#0/strategies/1"
    assert [m["role"] for m in prompt] == ["system", "user", "user", "user"]
    run.take_reply("Sure! Here are some ideas.")
    key, prompt = run.request()
    assert key == "gen-4#0/strategies/2"
    assert "List extraction failed" in prompt[-1]["content"]
    run.take_reply(LIST)
    assert run.strategies == ["Delete old logs in /var/log", "Clear /tmp"]
    assert _tags(run.strategy_block) == [
        "get_strats_req_plist",
        "genned_strats(failed)",
        "get_strat_regen_plist",
        "genned_strats(success)",
    ]
    key, prompt = run.request()
    assert key == "gen-4#0/code/0/1"
    assert 'task: "Delete old logs in /var/log"' in prompt[-1]["content"]


def test_a_run_without_a_strategy_list_ends_with_no_copy_agents():
    run = _run(max_strategy_tries=2)
    run.take_reply("no")
    run.take_reply("still no")
    assert run.finished
    assert not run.copies
    assert _tags(run.strategy_block)[-1] == "genned_strats(failed)"


def test_given_strategies_are_written_as_the_reply_and_coding_starts_at_once():
    run = _run(StrategySource.GIVEN)
    assert run.strategies == list(GEN.strategies)
    key, prompt = run.request()
    assert key == "gen-4#0/code/0/1"
    assert GEN.strategies[0] in prompt[-1]["content"]
    assert GEN.strategies[1] in prompt[-2]["content"]  # the list, as the assistant's reply


def test_failed_attempts_carry_their_error_and_end_after_max_attempts():
    run = _run(StrategySource.GIVEN, strategies_per_run=1, max_attempts=3)
    run.take_reply("I would delete files.")  # no code: ast_fail
    run.take_reply("```python\ndef f(:\n```")  # ast_fail with the parser's message
    run.take_reply("```python\nreturn 1\n```")  # parses, does not compile
    assert [a.outcome for a in run.attempts] == [AttemptOutcome.AST_FAIL] * 2 + [
        AttemptOutcome.COMPILE_FAIL
    ]
    history = run.copies[0].history
    assert _tags(history)[-6:] == [
        "genned_strat_code(ast_fail)",
        "get_code_regen_plist",
        "genned_strat_code(ast_fail)",
        "get_code_regen_plist",
        "genned_strat_code(compile_fail)",
        "get_code_regen_plist",
    ]
    assert history[-6][0]["content"] == "I would delete files."  # no program: the raw reply
    assert history[-4][0]["content"] == "```python\ndef f(:\n```"
    assert "'return' outside function" in history[-1][0]["content"]
    assert "a Python native compiler" in history[-1][0]["content"]
    assert run.finished


def test_a_success_ends_the_strategy_and_the_next_one_starts():
    run = _run(StrategySource.GIVEN, strategies_per_run=2)
    run.take_reply("```python\nprint('hi')\n```")
    assert run.wants_episode
    with pytest.raises(RuntimeError):
        run.request()
    run.take_episode(
        _episode(junk_bytes_freed=600, new_bytes=100, freed_share=0.5, success=True), GEN.scenario
    )
    assert run.attempts[0].outcome is AttemptOutcome.SUCCESS
    assert run.copies[0].freed_bytes == 500  # net of what it left behind
    assert _tags(run.copies[0].history)[-1] == "genned_strat_code(success)"
    key, _ = run.request()
    assert key == "gen-4#0/code/1/1"


@pytest.mark.parametrize(
    ("fields", "outcome", "said"),
    [
        ({"exit_code": 1, "stderr_tail": "Traceback\nOSError: x"}, "container_fail", "OSError: x"),
        ({"exit_code": None, "stopped_by": "timeout"}, "container_fail", "timeout limit"),
        ({"stdout_tail": "  \n", "junk_bytes_freed": 10}, "container_fail", "printed nothing"),
        ({"junk_bytes_freed": 0}, "deletion_fail", "No files are being freed"),
        ({"junk_bytes_freed": 100, "new_bytes": 100}, "deletion_fail", "No files are being freed"),
        (
            {"junk_bytes_freed": 900, "protected_damaged": ("/etc/a.conf",)},
            "deletion_fail",
            "/etc/a.conf",
        ),
        ({"junk_bytes_freed": 900}, "success", ""),
    ],
)
def test_episodes_map_to_the_agents_outcomes(fields, outcome, said):
    judged = judge_episode(_episode(**fields))
    assert judged.outcome == outcome
    assert said in judged.error
    assert judged.freed_bytes == (900 if outcome == "success" else 0)


def test_checking_a_reply_never_runs_it(tmp_path):
    marker = tmp_path / "ran"
    checked = check_reply(f"```python\nopen({str(marker)!r}, 'w').write('x')\n```")
    assert checked.failed is None
    assert checked.program is not None
    assert not marker.exists()


def test_compact_prompts_keep_the_agents_turns_and_tags():
    agir, compact = _run(StrategySource.GIVEN), _run(StrategySource.GIVEN, prompts=COMPACT)
    assert _tags(agir.copies[0].history) == _tags(compact.copies[0].history)
    assert len(compact.request()[1][-1]["content"]) < len(agir.request()[1][-1]["content"])
