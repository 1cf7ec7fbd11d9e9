"""A synthetic v5 corpus: one file per attempt record, with the writer's losses, and its truth.

Each agent run writes, flow by flow as the v5 agent does, its environment-getter
records, its strategy-list records and, per strategy, a chain of strategy-code
records: ``json.dump(indent=4)`` of every key of the record's type (``null`` where
unset), named ``{version}_{run_id}_{type}_{YYYY-MM-DD-HH-MM-SS}.json``. Files are named
by the second and written with ``"w"``, so a record written in the same second as the
next one of its type is overwritten and lost; some agent runs are killed and leave
their last records unwritten; some files are malformed. ``ground_truth.json`` states
what a reader must make of the files that survive, from the spec's rules, without
calling the reader.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agir_retrain.tasks.synth import text
from agir_retrain.tasks.synth.corpus import RUNS_FOLDER, CorpusTruth, write_corpus

VERSION = "d8c344-v5-0"
MAX_ATTEMPTS = 3
START = datetime(2025, 6, 2, 9, 0, 0)
CLASSES = ("no_runnable", "never_freed", "mixed", "first_try", "inconsistent")
FAILS = ("extract_fail", "validation_fail", "run_fail")
# Malformed files and the quarantine reason each must get.
FILE_QUIRKS = {
    "truncated_json": "truncated_json",
    "empty_file": "empty_file",
    "wrong_type": "wrong_type",
    "missing_key": "missing_key",
    "bad_attempt_number": "bad_attempt_number",
    "non_finite_number": "non_finite_number",
    "bad_message": "bad_message",
    "unknown_outcome": "unknown_outcome",
    "no_single_type": "unknown_schema",
}
_CODE_KEYS = (
    "run_id", "version", "special_env_info_hashes", "strategies_hash", "strategy", "prompt",
    "raw_response", "current_attempt", "max_attempts", "extract_result_if_err",
    "extract_result_if_ok", "validation_result_if_err", "run_result_if_ok",
    "run_result_if_ok_hash", "run_result_if_err", "this_code_space_change_kb",
)  # fmt: skip
_LIST_KEYS = (
    "run_id", "version", "special_env_info_hashes", "prompt", "raw_response", "current_attempt",
    "max_attempts", "extract_result_if_ok", "extract_result_if_ok_hash", "extract_result_if_err",
)  # fmt: skip
_GETTER_KEYS = (
    "run_id", "version", "prompt", "raw_response", "current_attempt", "max_attempts",
    "extract_result_if_ok", "extract_result_if_err", "validation_result_if_err",
    "run_result_if_ok", "run_result_if_ok_hash", "run_result_if_err", "run_result_if_empty",
)  # fmt: skip


def sha256(value: str) -> str:
    """The agent's ``string_hash``."""
    return hashlib.sha256(value.encode()).hexdigest()


def chain_run_id(run_id: str, strategies_hash: str, strategy: str) -> str:
    """The run id the reader gives a chain (docs/run-format.md, "v5 records")."""
    digest = hashlib.blake2b(f"{strategies_hash}\x1f{strategy}".encode(), digest_size=6)
    return f"{VERSION}_{run_id}#{digest.hexdigest()}"


@dataclass(slots=True)
class _Write:
    """One record the agent writes, and whether it survives."""

    kind: str
    record: dict[str, Any]
    same_second_as_next: bool = False  # written in the same second as the next of its kind
    chain: int | None = None  # the strategy index, for strategy_code records


@dataclass(slots=True)
class _Truth:
    files: list[dict[str, Any]] = field(default_factory=list)
    chains: list[dict[str, Any]] = field(default_factory=list)


def _outcomes(rng: random.Random) -> list[str]:
    """One chain's attempts as the agent makes them (stopping at the first that runs), or a
    contradiction the spec calls inconsistent."""
    kind = rng.choices(
        ["no_runnable", "never_freed", "mixed", "first_try", "multi_runnable", "after_runnable",
         "duplicate"],
        weights=[2, 2, 3, 3, 0.4, 0.4, 0.4],
    )[0]  # fmt: skip
    fails = [rng.choice(FAILS) for _ in range(rng.randint(1, MAX_ATTEMPTS - 1))]
    if kind == "no_runnable":
        return [rng.choice(FAILS) for _ in range(rng.randint(1, MAX_ATTEMPTS))]
    if kind == "never_freed":
        return [*fails[: rng.randint(0, len(fails))], "deletion_fail"]
    if kind == "mixed":
        return [*fails, "success"]
    if kind == "first_try":
        return ["success"]
    if kind == "multi_runnable":
        return ["deletion_fail", "success"]
    if kind == "after_runnable":
        return ["success", rng.choice(FAILS)]
    return ["duplicate"]


def _code_record(
    rng: random.Random, run_id: str, hashes: list[str], strategies_hash: str, strategy: str,
    attempt: int, outcome: str, success_code: str,
) -> dict[str, Any]:  # fmt: skip
    body = success_code
    while outcome not in ("success", "deletion_fail") and body == success_code:
        body = text.code(rng)  # a failed code never equals the success (that pair is skipped)
    request = text.CODE_REQUEST.format(strat=strategy)
    prompt = [
        {"role": "system", "content": text.SYSTEM_PROMPT},
        {"role": "user", "content": request},
    ]
    if attempt > 1:
        prompt.append({"role": "user", "content": f"Attempt {attempt - 1} failed; try again."})
    record = dict.fromkeys(_CODE_KEYS)
    record.update(
        run_id=run_id, version=VERSION, special_env_info_hashes=hashes,
        strategies_hash=strategies_hash, strategy=strategy, prompt=prompt,
        raw_response=text.fenced(body), current_attempt=attempt, max_attempts=MAX_ATTEMPTS,
    )  # fmt: skip
    if outcome == "extract_fail":
        record["raw_response"] = "I would remove the old files first."  # no fence to extract
        record["extract_result_if_err"] = "No code block found in the response"
    elif outcome == "validation_fail":
        record["validation_result_if_err"] = "SyntaxError: invalid syntax (line 3)"
    elif outcome == "run_fail":
        record["extract_result_if_ok"] = body
        record["run_result_if_err"] = "Traceback (most recent call last): PermissionError"
    else:
        record["extract_result_if_ok"] = body
        record["run_result_if_ok"] = rng.choice(["", "freed 1234 bytes"])  # "" still ran
        record["run_result_if_ok_hash"] = sha256(body)
        record["this_code_space_change_kb"] = (
            float(rng.randint(1, 500_000))
            if outcome == "success"
            else rng.choice([0.0, -8.0, None])
        )
    return record


def _agent_run(rng: random.Random, run_id: str, strategies: int) -> list[_Write]:
    """Every record one agent run writes, in order, flow by flow."""
    writes: list[_Write] = []
    hashes = []
    for attempt in range(1, rng.randint(1, 2) + 1):  # getters: maybe one failure, then output
        code_text = text.getter_code(rng)
        record = dict.fromkeys(_GETTER_KEYS)
        record.update(
            run_id=run_id, version=VERSION, current_attempt=attempt, max_attempts=MAX_ATTEMPTS,
            prompt=[{"role": "user", "content": text.SPECIAL_EGC_REQUEST}],
            raw_response=text.fenced(code_text), extract_result_if_ok=code_text,
        )  # fmt: skip
        output = text.listing(rng, 300)
        if attempt == 1 and rng.random() < 0.3:
            record["run_result_if_empty"] = "<nothing>"
        else:
            record["run_result_if_ok"], record["run_result_if_ok_hash"] = output, sha256(output)
            hashes.append(sha256(output))
        writes.append(_Write("special_environment_getter_code", record))
    names: list[str] = []
    while len(names) < strategies:
        name = text.strategy(rng)
        names += [name] if name not in names else []
    strategies_hash = sha256(",".join(names))
    for attempt, ok in enumerate([*([False] if rng.random() < 0.3 else []), True], start=1):
        record = dict.fromkeys(_LIST_KEYS)
        record.update(
            run_id=run_id, version=VERSION, special_env_info_hashes=hashes,
            prompt=[{"role": "system", "content": text.SYSTEM_PROMPT},
                    {"role": "user", "content": text.STRATS_REQUEST}],
            raw_response=text.strategies_reply(names) if ok else "",
            current_attempt=attempt, max_attempts=MAX_ATTEMPTS,
        )  # fmt: skip
        if ok:
            record["extract_result_if_ok"] = names
            record["extract_result_if_ok_hash"] = strategies_hash
        else:
            record["extract_result_if_err"] = "List extraction failed"
        writes.append(_Write("strategy_list", record))
    for index, strategy in enumerate(names):
        success_code = text.code(rng)
        outcomes = _outcomes(rng)
        numbers = list(range(1, len(outcomes) + 1))
        if outcomes == ["duplicate"]:  # attempt 1 on file twice (two seconds apart)
            outcomes, numbers = ["run_fail", "run_fail"], [1, 1]
        for attempt, outcome in zip(numbers, outcomes, strict=True):
            record = _code_record(
                rng, run_id, hashes, strategies_hash, strategy, attempt, outcome, success_code
            )
            writes.append(_Write("strategy_code", record, chain=index))
    # Same-second writes: a record shares its second with the next one of its kind (which
    # then overwrites it). Never for the duplicate-number pairs, whose point is that both land.
    for write, following in itertools.pairwise(writes):
        duplicate = (following.chain, following.record["current_attempt"]) == (
            write.chain,
            write.record["current_attempt"],
        )
        if following.kind == write.kind and not duplicate and rng.random() < 0.25:
            write.same_second_as_next = True
    return writes


def _expected(records: list[dict[str, Any]], has_list: bool) -> dict[str, Any]:
    """The class the spec gives a chain's surviving records (sorted by attempt number)."""
    numbers = [r["current_attempt"] for r in records]
    missing = [n for n in range(1, max(numbers) + 1) if n not in numbers]

    def outcome(r: dict[str, Any]) -> str:
        if r["extract_result_if_err"] is not None:
            return "extract_fail"
        if r["validation_result_if_err"] is not None:
            return "validation_fail"
        if r["run_result_if_err"] is not None:
            return "run_fail"
        kb = r["this_code_space_change_kb"]
        return "success" if kb is not None and kb > 0 else "deletion_fail"

    outcomes = [outcome(r) for r in records]
    ran = [i for i, o in enumerate(outcomes) if o in ("success", "deletion_fail")]
    failed = [i for i, o in enumerate(outcomes) if o in FAILS]
    pairs: dict[str, int] = {}
    if len(set(numbers)) < len(numbers):
        cls, reason = "inconsistent", "duplicate_attempt_numbers"
    elif len(ran) > 1:
        cls, reason = "inconsistent", "multiple_runnable_attempts"
    elif ran and numbers[-1] > numbers[ran[0]]:
        cls, reason = "inconsistent", "attempt_after_runnable"
    elif not ran:
        cls, reason = "no_runnable", "no_attempt_ran"
    elif outcomes[ran[0]] != "success":
        cls, reason = "never_freed", "none_freed_space"
    elif failed:
        cls, reason, pairs = "mixed", "succeeded_after_failures", {"mixed": len(failed)}
    elif numbers[ran[0]] == 1:
        cls, reason = "first_try", "first_attempt_succeeded"
        pairs = {"first_try_code": 1} | ({"first_try_strat": 1} if has_list else {})
    else:
        cls, reason = "inconsistent", "attempts_missing"
    return {"class": cls, "reason": reason, "attempts_missing": len(missing), "pairs": pairs}


def _quirk(rng: random.Random, quirk: str, when: datetime) -> tuple[str, bytes]:
    run_id = f"quirk-{rng.getrandbits(32):08x}"
    record = _code_record(rng, run_id, [], "0" * 64, text.strategy(rng), 1, "success", "pass\n")
    if quirk == "wrong_type":
        record["current_attempt"] = "1"
    elif quirk == "missing_key":
        del record["strategy"]
    elif quirk == "bad_attempt_number":
        record["current_attempt"] = 0
    elif quirk == "non_finite_number":
        record["this_code_space_change_kb"] = float("nan")  # json.dump writes NaN
    elif quirk == "bad_message":
        record["prompt"][0]["role"] = "tool"
    elif quirk == "unknown_outcome":
        record["run_result_if_ok"] = None
    elif quirk == "no_single_type":
        for key in ("strategies_hash", "strategy", "this_code_space_change_kb"):
            del record[key]
    data = json.dumps(record, indent=4).encode()
    if quirk == "truncated_json":
        data = data[: len(data) // 2]
    elif quirk == "empty_file":
        data = b""
    return f"{VERSION}_{run_id}_strategy_code_{when:%Y-%m-%d-%H-%M-%S}.json", data


def write_v5_corpus(
    out: Path, *, runs: int, seed: int, truth_name: str = "ground_truth.json"
) -> CorpusTruth:
    """Write about ``runs`` v5 chains under ``out/runs``, and ``out/<truth_name>``."""
    rng = random.Random(seed)
    corpus = out / RUNS_FOLDER
    corpus.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[str, bytes]] = {}  # name -> (kind, bytes): "w" overwrites
    truth = _Truth()
    clock = START
    planned = agent_index = 0
    lost_list: set[str] = set()
    while planned < runs:
        run_id = f"{clock:%Y%m%d}-{rng.getrandbits(24):06x}"
        writes = _agent_run(rng, run_id, min(runs - planned, rng.randint(1, 4)))
        planned += len({w.chain for w in writes if w.chain is not None})
        killed = rng.random() < 0.1  # killed mid-way: the last code records never written
        first_code = next(i for i, w in enumerate(writes) if w.kind == "strategy_code")
        stop = rng.randint(max(first_code, len(writes) - 3), len(writes)) if killed else len(writes)
        names_of: list[str] = []
        for write in writes[:stop]:
            name = f"{VERSION}_{run_id}_{write.kind}_{clock:%Y-%m-%d-%H-%M-%S}.json"
            files[name] = (write.kind, json.dumps(write.record, indent=4).encode())
            names_of.append(name)
            if not write.same_second_as_next:  # else the next write lands in this second
                clock += timedelta(seconds=rng.randint(1, 30))
        if agent_index % 7 == 3:  # its strategy list file cut short: its chains lack P_s
            list_name = next(n for n in reversed(names_of) if "_strategy_list_" in n)
            kind, data = files[list_name]
            files[list_name] = (kind, data[: len(data) // 2])
            lost_list.add(list_name)
        agent_index += 1
        clock += timedelta(minutes=rng.randint(5, 90))
    for quirk in FILE_QUIRKS:
        clock += timedelta(seconds=rng.randint(1, 60))
        name, data = _quirk(rng, quirk, clock)
        files[name] = (f"quirk:{quirk}", data)
    chains: dict[str, list[dict[str, Any]]] = {}
    has_list: dict[str, bool] = {}
    for name, (kind, data) in sorted(files.items()):
        (corpus / name).write_bytes(data)
        quirk = kind.removeprefix("quirk:") if kind.startswith("quirk:") else None
        quarantine = FILE_QUIRKS[quirk] if quirk else None
        if name in lost_list:
            quarantine = "truncated_json"
        truth.files.append(
            {"name": name, "type": None if quirk else kind, "quarantine": quarantine}
        )
        if kind == "strategy_list" and quarantine is None:
            record = json.loads(data)
            if record["extract_result_if_ok"] is not None:
                has_list[record["run_id"]] = True
        if kind == "strategy_code":
            record = json.loads(data)
            key = chain_run_id(record["run_id"], record["strategies_hash"], record["strategy"])
            chains.setdefault(key, []).append(record)
    for run_id, records in sorted(chains.items()):
        records.sort(key=lambda r: r["current_attempt"])
        expected = _expected(records, has_list.get(records[0]["run_id"], False))
        truth.chains.append({"run_id": run_id} | expected)
    document = {"seed": seed, "format": "v5", "files": truth.files, "chains": truth.chains,
                "totals": v5_totals(truth.files, truth.chains)}  # fmt: skip
    (out / truth_name).write_text(json.dumps(document, indent=2))
    return CorpusTruth(
        files=len(files), runs=len(truth.chains), bytes=sum(len(d) for _, d in files.values())
    )


def v5_totals(files: list[dict[str, Any]], chains: list[dict[str, Any]]) -> dict[str, Any]:
    """The report figures the files and chains of a v5 corpus must give."""
    by_class = Counter(dict.fromkeys(CLASSES, 0))
    by_class.update(chain["class"] for chain in chains)
    pairs: Counter[str] = Counter()
    for chain in chains:
        pairs.update(chain["pairs"])
    read = [f for f in files if not f["quarantine"]]
    quarantined = Counter(f["quarantine"] for f in files if f["quarantine"])
    missing = Counter(str(c["attempts_missing"]) for c in chains)
    return {
        "files_in": len(files),
        "files_read": len(read),
        "files_quarantined": len(files) - len(read),
        "runs_in": len(chains),
        "runs_quarantined": 0,
        "runs_by_class": dict(sorted(by_class.items())),
        "pairs_by_rule": dict(sorted(pairs.items())),
        "quarantine_reasons": dict(sorted(quarantined.items())),
        "v5_records": dict(sorted(Counter(f["type"] for f in read).items())),
        "attempts_missing": sum(chain["attempts_missing"] for chain in chains),
        "chains_by_attempts_missing": dict(sorted(missing.items(), key=lambda kv: int(kv[0]))),
    }


def write_mixed_corpus(out: Path, *, runs: int, seed: int, env_kib: int = 8) -> CorpusTruth:
    """Write a v4/2024-12 corpus and a v5 corpus into one folder, half the runs each.

    ``ground_truth.json`` then holds both truths (``v4``, ``v5``) and their summed totals.
    """
    older = write_corpus(out, runs=max(1, runs // 2), seed=seed, env_kib=env_kib)
    v4 = json.loads((out / "ground_truth.json").read_text())
    newer = write_v5_corpus(out, runs=max(1, runs - runs // 2), seed=seed + 1,
                            truth_name="ground_truth.json")  # fmt: skip
    v5 = json.loads((out / "ground_truth.json").read_text())
    totals: dict[str, Any] = {}
    for key in v4["totals"].keys() | v5["totals"].keys():
        a, b = v4["totals"].get(key), v5["totals"].get(key)
        if isinstance(a, dict) or isinstance(b, dict):
            merged = Counter(a or {})
            merged.update(b or {})
            totals[key] = dict(sorted(merged.items()))
        else:
            totals[key] = (a or 0) + (b or 0)
    document = {"seed": seed, "format": "mixed", "v4": v4, "v5": v5, "totals": totals}
    (out / "ground_truth.json").write_text(json.dumps(document, indent=2))
    return CorpusTruth(
        files=older.files + newer.files,
        runs=older.runs + newer.runs,
        bytes=older.bytes + newer.bytes,
    )
