"""One run of the agent's loop as a state machine: it asks for a completion, or for an episode.

A run is what one AGIR file holds: the main agent's strategy stage, then one copy agent
per strategy it pursues, each with up to ``max_attempts`` code attempts, every failure
followed by the regeneration request that carries its error. The machine only builds
messages and keeps the record; sampling and sandboxing are done by whoever drives it
(``collect.py``), in waves over many runs, so a batch of prompts goes to the model at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from agir_retrain.tasks import agir_prompts
from agir_retrain.tasks.agent.outcomes import AttemptOutcome, check_reply, judge_episode
from agir_retrain.tasks.agent.prompts import PromptSet, basic_env_message, special_env_message
from agir_retrain.tasks.chat import Role
from agir_retrain.tasks.environment.contract import Episode, Scenario

Tagged = tuple[dict[str, str], str]  # (message, tag), one entry of a tagged chat history


class StrategySource(StrEnum):
    """Where a run's strategies come from."""

    MODEL = "model"  # the model lists them, as the agent does
    GIVEN = "given"  # the task's own list (a generated scenario's), written as the reply


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentTask:
    """A scenario to play on, and the strategies that fit it (used when they are given)."""

    task_id: str
    scenario: Scenario
    scenario_ref: str  # how evaluation names it: a profile, gen-<seed>, or a file
    strategies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopLimits:
    """The agent's retry limits."""

    max_attempts: int = 3  # code attempts per strategy
    max_strategy_tries: int = 3  # strategy replies before the run gives up
    strategies_per_run: int = 3  # copy agents per run: the first strategies of the list


@dataclass(frozen=True, slots=True, kw_only=True)
class PlayedAttempt:
    """One code attempt as the run file records it."""

    strategy: int
    number: int
    outcome: AttemptOutcome
    freed_bytes: int
    damaged: tuple[str, ...]
    reply: str  # what the model wrote
    prompt: tuple[dict[str, str], ...]  # what it was asked
    state: Scenario  # the scenario state the attempt started from


@dataclass(slots=True, kw_only=True)
class CopyAgent:
    """One strategy pursued: its history and what its code freed."""

    strategy: str
    history: list[Tagged]
    freed_bytes: int = 0


@dataclass(slots=True, kw_only=True)
class RunPlay:
    """The state of one run (mutable while it is played; ``finished`` when done)."""

    task: AgentTask
    run_index: int
    prompts: PromptSet
    source: StrategySource
    limits: LoopLimits
    state: Scenario = field(init=False)
    prefix: list[Tagged] = field(init=False)
    strategy_block: list[Tagged] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    copies: list[CopyAgent] = field(default_factory=list)
    attempts: list[PlayedAttempt] = field(default_factory=list)
    strategy_tries: int = 0
    pending_program: str | None = None
    pending_reply: str = ""
    finished: bool = False
    excluded: str | None = None  # why the run is not written (a sandbox that could not run)

    def __post_init__(self) -> None:
        self.state = self.task.scenario
        self.prefix = [
            (_message(Role.SYSTEM, self.prompts.system), "system_plist"),
            (
                _message(Role.USER, basic_env_message(self.task.scenario, self.prompts)),
                "get_basic_env_plist",
            ),
            (
                _message(Role.USER, special_env_message(self.task.scenario, self.prompts)),
                "get_special_env_plist",
            ),
        ]
        self.strategy_block = [
            (_message(Role.USER, self.prompts.strategies_request), "get_strats_req_plist")
        ]
        if self.source is StrategySource.GIVEN:
            given = list(self.task.strategies)
            if not given:
                raise ValueError(f"task {self.task.task_id}: strategies are given but it has none")
            reply = agir_prompts.strategies_reply(given)
            self.strategy_block.append((_message(Role.ASSISTANT, reply), "genned_strats(success)"))
            self._start_copies(given)

    @property
    def run_id(self) -> str:
        """The run's key in sampling seeds and progress: ``<task>#<run index>``."""
        return f"{self.task.task_id}#{self.run_index}"

    @property
    def wants_episode(self) -> bool:
        """Whether the last reply holds a program that must now run in the sandbox."""
        return self.pending_program is not None

    @property
    def step_key(self) -> str:
        """The key of the current step (unique in the collection): it seeds the reply drawn
        for it and names the episode of its program."""
        if not self.copies:
            return f"{self.run_id}/strategies/{self.strategy_tries + 1}"
        strategy = len(self.copies) - 1
        number = sum(1 for a in self.attempts if a.strategy == strategy) + 1
        return f"{self.run_id}/code/{strategy}/{number}"

    def request(self) -> tuple[str, tuple[dict[str, str], ...]]:
        """The next completion to draw: its key and its prompt."""
        if self.finished or self.pending_program is not None:
            raise RuntimeError(f"{self.run_id}: no completion is wanted now")
        history = self.copies[-1].history if self.copies else self.prefix + self.strategy_block
        return self.step_key, tuple(m for m, _ in history)

    def take_reply(self, reply: str) -> None:
        """Record a completion; a program that can run becomes ``pending_program``."""
        if not self.copies:
            self._take_strategies(reply)
            return
        checked = check_reply(reply)
        self.pending_reply = reply
        if checked.failed is not None:
            # Nothing ran: the agent stores the raw reply when it holds no program.
            shown = (
                reply
                if checked.program is None
                else agir_prompts.fenced(checked.program.rstrip("\n"))
            )
            self._record(shown, checked.failed, 0, (), checked.error)
            return
        self.pending_program = checked.program

    def take_episode(self, episode: Episode, after: Scenario) -> None:
        """Record the pending program's episode; ``after`` is the state it left."""
        program = self.pending_program
        if program is None:
            raise RuntimeError(f"{self.run_id}: no program was waiting for an episode")
        self.pending_program = None
        judged = judge_episode(episode)
        self._record(
            agir_prompts.fenced(program.rstrip("\n")),
            judged.outcome,
            judged.freed_bytes,
            episode.protected_damaged,
            judged.error,
        )
        self.state = after

    def exclude(self, why: str) -> None:
        """Stop the run without writing it (the sandbox, not the program, failed)."""
        self.excluded = why
        self.pending_program = None
        self.finished = True

    def _take_strategies(self, reply: str) -> None:
        self.strategy_tries += 1
        strategies = agir_prompts.parse_strategies(reply)
        if strategies is not None:
            self.strategy_block.append((_message(Role.ASSISTANT, reply), "genned_strats(success)"))
            self._start_copies(strategies)
            return
        self.strategy_block.append((_message(Role.ASSISTANT, reply), "genned_strats(failed)"))
        if self.strategy_tries >= self.limits.max_strategy_tries:
            # As the agent does: the run ends with its failed replies and no copy agents.
            self.finished = True
            return
        problems = f"['{agir_prompts.LIST_EXTRACTION_FAILED}']"
        regen = self.prompts.strategies_regen.format(problems=problems)
        self.strategy_block.append((_message(Role.USER, regen), "get_strat_regen_plist"))

    def _start_copies(self, strategies: list[str]) -> None:
        self.strategies = strategies
        self._next_copy()

    def _next_copy(self) -> None:
        index = len(self.copies)
        if index >= min(len(self.strategies), self.limits.strategies_per_run):
            self.finished = True
            return
        strategy = self.strategies[index]
        self.copies.append(CopyAgent(strategy=strategy, history=self.code_request(strategy)))

    def code_request(self, strategy: str) -> list[Tagged]:
        """A copy agent's history as it starts on ``strategy``: the environment, the strategy
        block, and the request for code."""
        request = self.prompts.code_request.format(strat=strategy)
        return [
            *self.prefix,
            *self.strategy_block,
            (_message(Role.USER, request), "get_strat_code_req_plist"),
        ]

    def _record(
        self,
        shown: str,
        outcome: AttemptOutcome,
        freed: int,
        damaged: tuple[str, ...],
        error: str,
    ) -> None:
        copy = self.copies[-1]
        strategy = len(self.copies) - 1
        number = sum(1 for a in self.attempts if a.strategy == strategy) + 1
        self.attempts.append(
            PlayedAttempt(
                strategy=strategy,
                number=number,
                outcome=outcome,
                freed_bytes=freed,
                damaged=damaged,
                reply=self.pending_reply,
                prompt=tuple(m for m, _ in copy.history),
                state=self.state,
            )
        )
        copy.history.append((_message(Role.ASSISTANT, shown), f"genned_strat_code({outcome})"))
        if outcome is AttemptOutcome.SUCCESS:
            copy.freed_bytes = freed
            self._next_copy()
            return
        regen = self.prompts.code_regen.format(
            run_context=agir_prompts.RUN_CONTEXT[outcome.value],
            error_context=error,
            strat=copy.strategy,
        )
        copy.history.append((_message(Role.USER, regen), "get_code_regen_plist"))
        if number >= self.limits.max_attempts:
            self._next_copy()


def _message(role: Role, content: str) -> dict[str, str]:
    return {"role": role.value, "content": content}
