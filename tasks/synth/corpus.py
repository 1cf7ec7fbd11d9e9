"""A synthetic AGIR corpus shaped like the agent's own files, with its ground truth.

Each run is planned first (era, outcomes, raw ``space_freed``, and the class, reason
and pairs the seed's rules give it), then written the way the agent's serializer
writes it: ``json.dump(..., indent=2)`` of the v4 or 2024-12 structure, the main
agent's strategy block twice, copies holding it once, model-suffixed tags. Quirk
files and runs (truncated, not UTF-8, NaN, bad entries, a malformed v5 record ...) come with the reason
they must be quarantined for. ``ground_truth.json`` states it all, independently of
the reader, so tests can hold the reader to it.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agir_retrain.tasks.synth import text
from agir_retrain.tasks.synth.truth import corpus_totals, file_truth

FAILS_NOT_RUN = ("ast_fail", "compile_fail", "container_fail")
FAILS = (*FAILS_NOT_RUN, "deletion_fail")
MODEL_NAMES = ("qwen", "deepseek", "qwen-0c68278e2d-25-01-22")
ERA_START = {
    "legacy": datetime(2024, 12, 2),
    "v4_mib": datetime(2025, 1, 22),
    "v4_kib": datetime(2025, 5, 20),
}
RUN_QUIRKS = (
    "non_finite_number",
    "missing_key",
    "wrong_type",
    "bad_history_entry",
    "bad_message",
    "unknown_outcome",
)
RUNS_FOLDER = "runs"
FILE_QUIRKS = (
    "truncated_json",
    "invalid_json",
    "not_utf8",
    "empty_file",
    "not_an_object",
    "v5_wrong_type",
    "unknown_schema",
    "missing_env_agent",
)


@dataclass(slots=True)
class RunPlan:
    """One copy agent to write, and what the seed's rules make of it."""

    outcomes: list[str]
    raw: float  # the copy agent's space_freed, in the era's unit and sign
    run_class: str
    reason: str
    pairs: Counter[str] = field(default_factory=Counter)
    skipped_identical: int = 0
    repeat_success_code: bool = False
    quirk: str | None = None  # a run-level quarantine reason


@dataclass(frozen=True, slots=True)
class CorpusTruth:
    """What ``write_corpus`` wrote, in brief."""

    files: int
    runs: int
    bytes: int


def _plan_run(rng: random.Random, era: str) -> RunPlan:
    """Pick a class for the era and outcomes and a raw figure that realise it."""
    kib = era == "v4_kib"
    freed = float(rng.randint(1, 5_000_000)) if kib else -float(rng.randint(1, 5_000))
    consumed = -freed  # the raw figure of a run whose code used space
    choice = rng.choices(
        ["no_runnable", "never_freed", "mixed", "first_try", "inconsistent"],
        weights=[2, 2, 3, 3, 1] if kib else [2, 2, 1, 1, 3],
    )[0]
    if choice == "no_runnable":
        outcomes = [rng.choice(FAILS_NOT_RUN) for _ in range(rng.randint(0, 3))]
        return RunPlan(
            outcomes, 0.0, "no_runnable", "no_attempt_ran" if outcomes else "no_attempts"
        )
    if choice == "never_freed":
        outcomes = [rng.choice(FAILS) for _ in range(rng.randint(0, 2))] + ["deletion_fail"]
        rng.shuffle(outcomes)
        raw = rng.choice([0.0, consumed]) if kib else 0.0  # KiB new-old <= 0; MiB needs exactly 0
        return RunPlan(outcomes, raw, "never_freed", "none_freed_space")
    if choice == "first_try":
        return RunPlan(
            ["success"],
            freed,
            "first_try",
            "first_attempt_succeeded",
            pairs=Counter(first_try_strat=1, first_try_code=1),
        )
    if choice == "mixed":
        fails = [rng.choice(FAILS) for _ in range(rng.randint(1, 2))]
        repeat = rng.random() < 0.2  # the agent resubmitted the code that then succeeded
        plan = RunPlan(
            [*fails, "success"],
            freed,
            "mixed",
            "succeeded_after_failures",
            repeat_success_code=repeat,
        )
        plan.skipped_identical = 1 if repeat else 0
        plan.pairs["mixed"] = len(fails) - plan.skipped_identical
        return plan
    # inconsistent: what the agent itself tagged success used space (old formula), or the
    # reverse; in KiB files, the spec's "(success) with space_freed <= 0".
    if rng.random() < 0.5:
        outcomes = [rng.choice(FAILS) for _ in range(rng.randint(0, 2))] + ["success"]
        return RunPlan(
            outcomes, rng.choice([0.0, consumed]), "inconsistent", "success_without_space_freed"
        )
    outcomes = [rng.choice(FAILS) for _ in range(rng.randint(0, 2))] + ["deletion_fail"]
    return RunPlan(outcomes, freed, "inconsistent", "space_freed_without_success")


class _FileWriter:
    """Builds one v4 or 2024-12 file the way the agent's serializer lays it out."""

    def __init__(self, rng: random.Random, era: str, env_chars: int) -> None:
        self.rng = rng
        self.era = era
        self.env_chars = env_chars
        self.model = rng.choice(MODEL_NAMES)
        self.getter_codes = [text.getter_code(rng) for _ in range(rng.randint(1, 2))]
        self.snapshots: list[list[str]] = [self._snapshot()]
        self.basic: list[dict[str, float]] = [self._basic()]

    def _snapshot(self) -> list[str]:
        size = max(64, self.env_chars // max(1, len(self.getter_codes)))
        return [text.listing(self.rng, size) for _ in self.getter_codes]

    def _basic(self) -> dict[str, float]:
        total = float(self.rng.choice((51_200, 102_400)))
        return {
            "total_system_memory": 15953.0,
            "available_system_memory": float(self.rng.randint(2000, 15000)),
            "running_memory": float(self.rng.randint(500, 9000)),
            "total_storage": total,
            "available_storage": round(total * self.rng.uniform(0.05, 0.6), 1),
        }

    def _tag(self, base: str) -> str:
        return f"{base}({self.model})" if self.era != "legacy" else base

    def _prefix(self) -> list[list[Any]]:
        outputs = [out for snap in self.snapshots[-10:] for out in snap][-10:]
        return [
            [{"role": "system", "content": text.SYSTEM_PROMPT}, "system_plist"],
            [{"role": "user", "content": text.basic_env_block(self.rng)}, "get_basic_env_plist"],
            [{"role": "user", "content": text.special_env_block(outputs)}, "get_special_env_plist"],
        ]

    def strategy_block(self, strats: list[str]) -> list[list[Any]]:
        request = (
            "get_strat_req_plist" if self.era == "legacy" else self._tag("get_strats_req_plist")
        )
        reply = "gen_strats" if self.era == "legacy" else "genned_strats(success)"
        block: list[list[Any]] = [[{"role": "user", "content": text.STRATS_REQUEST}, request]]
        if self.era != "legacy" and self.rng.random() < 0.3:  # an unparsable reply, then a retry
            block += [
                [{"role": "assistant", "content": ""}, "genned_strats(failed)"],
                [
                    {
                        "role": "user",
                        "content": text.STRATS_REGEN.format(problems="['List extraction failed']"),
                    },
                    "get_strat_regen_plist",
                ],
            ]
        block.append([{"role": "assistant", "content": text.strategies_reply(strats)}, reply])
        return block

    def copy_agent(self, plan: RunPlan, strat: str, block: list[list[Any]]) -> dict[str, Any]:
        self.snapshots.append(self._snapshot())
        self.basic.append(self._basic())
        history = self._prefix() + [list(entry) for entry in block]
        history.append(
            [
                {"role": "user", "content": text.CODE_REQUEST.format(strat=strat)},
                "get_strat_code_req_plist",
            ]
        )
        code_tag = "strat_codegen" if self.era == "legacy" else "genned_strat_code"
        success_code = text.code(self.rng)
        for i, outcome in enumerate(plan.outcomes):
            if outcome == "success":
                body = success_code
            elif plan.repeat_success_code and i == 0:
                body = success_code
            else:
                body = text.code(self.rng)
            history.append(
                [{"role": "assistant", "content": text.fenced(body)}, f"{code_tag}({outcome})"]
            )
            if outcome != "success":
                run_context, error = text.REGEN_CONTEXT[outcome]
                history.append(
                    [
                        {
                            "role": "user",
                            "content": text.CODE_REGEN.format(
                                run_context=run_context,
                                error_context=error.format(n=i + 1),
                                strat=strat,
                            ),
                        },
                        "get_code_regen_plist",
                    ]
                )
        agent: dict[str, Any] = {
            "chosen_strat": strat,
            "strats": [],
            "in_con_path": "/",
            "init_bs_env_info_history": list(self.basic),
            "init_sp_env_info_history": list(self.snapshots),
            "tagged_chat_history": history,
            "prev_strats": [],
        }
        if self.era != "legacy":
            agent["space_freed"] = plan.raw
        return agent

    def env_agent(self) -> dict[str, Any]:
        history: list[list[Any]] = [
            [{"role": "system", "content": text.SYSTEM_PROMPT}, "system_plist"],
            [{"role": "user", "content": text.basic_env_block(self.rng)}, "get_basic_env_plist"],
        ]
        for code_text in self.getter_codes:
            request = (
                f"get_special_egc_req_plist,{self.model}"
                if self.era == "legacy"
                else self._tag("get_special_egc_req_plist")
            )
            history += [
                [{"role": "user", "content": text.SPECIAL_EGC_REQUEST}, request],
                [
                    {"role": "assistant", "content": text.fenced(code_text)},
                    "gen_sp_egc(success)" if self.era == "legacy" else "genned_sp_egc(success)",
                ],
            ]
        agent: dict[str, Any] = {
            "tagged_chat_history": history,
            "special_env_info_getter_codes": self.getter_codes,
            "basic_env_info_history": self.basic,
            "special_env_info_history": self.snapshots,
        }
        if self.era == "v4_kib":
            agent["model_name"] = self.model
        return agent


def _apply_run_quirk(agent: dict[str, Any], quirk: str) -> None:
    history = agent["tagged_chat_history"]
    if quirk == "non_finite_number":
        agent["space_freed"] = float("nan")
    elif quirk == "missing_key":
        del agent["tagged_chat_history"]
    elif quirk == "wrong_type":
        agent["chosen_strat"] = 42
    elif quirk == "bad_history_entry":
        history[1] = [history[1][0]]
    elif quirk == "bad_message":
        history[0][0]["role"] = "tool"
    elif quirk == "unknown_outcome":
        history.append(
            [{"role": "assistant", "content": "```python\npass\n```"}, "genned_strat_code(timeout)"]
        )


def _build_file(rng: random.Random, era: str, plans: list[RunPlan], env_chars: int) -> dict:
    writer = _FileWriter(rng, era, env_chars)
    strats = [text.strategy(rng) for _ in plans]
    main_prefix = writer._prefix()  # the main agent's env turns are never refreshed
    block = writer.strategy_block(strats)
    copies = []
    for plan, strat in zip(plans, strats, strict=True):
        agent = writer.copy_agent(plan, strat, block)
        agent["strats"] = strats
        if plan.quirk:
            _apply_run_quirk(agent, plan.quirk)
        copies.append(agent)
    env = writer.env_agent()
    if era == "legacy":
        total = sum(
            p.raw for p in plans if any(o in ("deletion_fail", "success") for o in p.outcomes)
        )
        return {"strat_agents": copies, "env_agent": env, "space_freed": total}
    main_history = main_prefix + block + block  # the agent appends its strategy block twice
    main = {
        "chosen_strat": "",
        "strats": strats,
        "in_con_path": "/",
        "init_bs_env_info_history": writer.basic,
        "init_sp_env_info_history": writer.snapshots,
        "tagged_chat_history": main_history,
        "prev_strats": [],
        "space_freed": 0,
    }
    return {
        "main_strat_agent": main,
        "copy_strat_agents": copies,
        "env_agent": env,
        "space_freed": sum(p.raw for p in plans if p.quirk is None),
    }


def _legacy_share_known(plans: list[RunPlan]) -> None:
    """2024-12 files hold only a total: where several runs ran code, each share is unknown."""
    ran = [p for p in plans if any(o in ("deletion_fail", "success") for o in p.outcomes)]
    if len(ran) <= 1:
        return
    for plan in ran:
        if "success" in plan.outcomes:
            plan.run_class, plan.reason, plan.pairs = (
                "inconsistent",
                "space_freed_unknown",
                Counter(),
            )
            plan.skipped_identical = 0
        elif plan.run_class == "inconsistent":  # freed space but no success: unknowable now
            plan.run_class, plan.reason = "never_freed", "none_freed_space"


def write_corpus(out: Path, *, runs: int, seed: int, env_kib: int = 8) -> CorpusTruth:
    """Write ``runs`` runs as AGIR files under ``out/runs``, plus quirk files, and
    ``out/ground_truth.json`` (beside the corpus, so that reading ``out/runs`` skips it)."""
    rng = random.Random(seed)
    corpus = out / RUNS_FOLDER
    corpus.mkdir(parents=True, exist_ok=True)
    env_chars = env_kib * 1024
    files: list[dict[str, Any]] = []
    clock = dict(ERA_START)
    run_quirks = list(RUN_QUIRKS) if runs >= 20 else []
    planned = 0
    total_bytes = 0
    while planned < runs:
        era = rng.choices(["v4_kib", "v4_mib", "legacy"], weights=[6, 3, 1])[0]
        count = min(runs - planned, rng.randint(1, 4) if era != "legacy" else rng.randint(1, 2))
        plans = [_plan_run(rng, era) for _ in range(count)]
        if era == "legacy":
            _legacy_share_known(plans)
        elif run_quirks and rng.random() < 0.3:
            plans[-1].quirk = run_quirks.pop()
        clock[era] += timedelta(seconds=rng.randint(60, 7200))
        name = f"full_agent_data_{clock[era]:%Y_%m_%d_%H_%M_%S}.json"
        data = json.dumps(_build_file(rng, era, plans, env_chars), indent=2).encode()
        total_bytes += _write(corpus / name, data)
        files.append(file_truth(name, None, plans, data))
        planned += count
    for quirk in FILE_QUIRKS if runs >= 20 else ():
        clock["v4_kib"] += timedelta(seconds=rng.randint(60, 7200))
        name, data = _quirk_file(rng, quirk, clock["v4_kib"], env_chars)
        total_bytes += _write(corpus / name, data)
        reason = {"missing_env_agent": "missing_key", "v5_wrong_type": "wrong_type"}.get(
            quirk, quirk
        )
        files.append({"name": name, "quarantine": reason, "runs": []})
    clock["v4_kib"] += timedelta(seconds=61)  # a run whose strategy generation failed: no copies
    empty = _build_file(rng, "v4_kib", [], env_chars)
    name = f"full_agent_data_{clock['v4_kib']:%Y_%m_%d_%H_%M_%S}.json"
    total_bytes += _write(corpus / name, json.dumps(empty, indent=2).encode())
    files.append({"name": name, "quarantine": None, "runs": []})
    files.sort(key=lambda f: f["name"])
    truth = {"seed": seed, "runs": runs, "files": files, "totals": corpus_totals(files)}
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=2))
    return CorpusTruth(files=len(files), runs=truth["totals"]["runs_in"], bytes=total_bytes)


def _write(path: Path, data: bytes) -> int:
    path.write_bytes(data)
    return len(data)


def _quirk_file(
    rng: random.Random, quirk: str, when: datetime, env_chars: int
) -> tuple[str, bytes]:
    name = f"full_agent_data_{when:%Y_%m_%d_%H_%M_%S}.json"
    good = json.dumps(_build_file(rng, "v4_kib", [_plan_run(rng, "v4_kib")], env_chars), indent=2)
    if quirk == "truncated_json":
        return name, good[: len(good) * 2 // 3].encode()
    if quirk == "invalid_json":  # a bare value mid-file: not JSON, and not cut short
        return name, good.replace('"in_con_path": "/"', '"in_con_path": /', 1).encode()
    if quirk == "not_utf8":
        cut = good.index("free up storage")
        return name, good[:cut].encode() + b"\xff\xfe" + good[cut:].encode()
    if quirk == "empty_file":
        return name, b""
    if quirk == "not_an_object":
        return name, json.dumps([json.loads(good)], indent=2).encode()
    if quirk == "unknown_schema":
        return name, json.dumps({"agent": "something else", "runs": []}, indent=2).encode()
    if quirk == "missing_env_agent":
        document = json.loads(good)
        del document["env_agent"]
        return name, json.dumps(document, indent=2).encode()
    # v5: one file per attempt record, every key present, null where unset; this one has
    # a figure written as a string, which quarantines it (`agir-retrain synth --format v5`
    # writes whole v5 corpora).
    record = {
        "run_id": f"{when:%Y%m%d}-{rng.getrandbits(24):06x}",
        "version": "d8c344-main-0",
        "special_env_info_hashes": [],
        "strategies_hash": "0" * 64,
        "strategy": text.strategy(rng),
        "prompt": [
            {"role": "system", "content": text.SYSTEM_PROMPT},
            {"role": "user", "content": "Generate code."},
        ],
        "raw_response": text.fenced(text.code(rng)),
        "current_attempt": 1,
        "max_attempts": 3,
        "extract_result_if_err": None,
        "extract_result_if_ok": text.code(rng),
        "validation_result_if_err": None,
        "run_result_if_ok": "freed 10 bytes",
        "run_result_if_ok_hash": "0" * 64,
        "run_result_if_err": None,
        "this_code_space_change_kb": "12.0",
    }
    return f"d8c344-main-0_{record['run_id']}_strategy_code_{when:%Y-%m-%d-%H-%M-%S}.json", (
        json.dumps(record, indent=4).encode()
    )
