"""A run format is one module: a toy format defined here, outside the package, is registered
and its files are read, scored, paired and built into a dataset with no edit elsewhere.

The toy writes one JSON file per attempt (like v5), so its runs are formed after every
shard by its own post-shard step, and it keeps a count of its own in the report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from agir_retrain.tasks.dataset.build import (
    assemble_dataset,
    build_shard,
    pending_garble_requests,
    plan_dataset,
    save_garbled,
)
from agir_retrain.tasks.dataset.build_report import BuildReport
from agir_retrain.tasks.dataset.garble import corrupt
from agir_retrain.tasks.dataset.post_shard import build_post_shard
from agir_retrain.tasks.errors import RunFileError
from agir_retrain.tasks.records import (
    Attempt,
    GarbleMethod,
    GarbleResult,
    Message,
    Outcome,
    QuarantineReason,
    Role,
    Run,
    UnitConvention,
)
from agir_retrain.tasks.runs.fields import ReadLimits, RunFileResult
from agir_retrain.tasks.runs.formats.base import RunFormat
from agir_retrain.tasks.runs.formats.registry import (
    _REPORT_KEYS,
    format_named,
    post_shard_formats,
    register_run_format,
    run_formats,
    unregister_run_format,
)
from agir_retrain.tasks.runs.ingest import ingest
from agir_retrain.tasks.runs.reader import read_run_file
from agir_retrain.tasks.runs.report import Report
from agir_retrain.tasks.runs.scoring import classify_run, normalise_space_freed
from agir_retrain.tasks.settings.models import ExportSettings, ReadSettings
from agir_retrain.tasks.tables import SCHEMAS

# --- the toy format: what a new format's module holds ------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ToyAttempt:
    """One attempt file, kept until every shard is read (its run spans files)."""

    source: str
    run: str
    number: int
    strategy: str
    reply: str
    ran: bool
    freed_kib: float


@dataclass(slots=True)
class ToyCounts:
    """The toy's own report entry: attempt files read."""

    attempts: Counter[str] = field(default_factory=Counter)

    def add_file(self, result: RunFileResult) -> None:
        self.attempts["read"] += len(result.pending)

    def merge(self, other: ToyCounts) -> None:
        self.attempts.update(other.attempts)

    def to_dict(self) -> dict[str, Any]:
        return {"toy_attempts": self.attempts["read"]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyCounts:
        return cls(Counter(read=data.get("toy_attempts", 0)))


class ToyRunsStep:
    """Group every shard's attempt files by run, in a JSONL part per shard."""

    name = "toy-runs"
    version = "1"
    part_file = "toy_attempts.jsonl"

    def write_part(self, records: Sequence[ToyAttempt], path: Path) -> None:
        path.write_bytes(
            b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records)
        )

    def has_records(self, path: str) -> bool:
        return Path(path).exists() and Path(path).stat().st_size > 0

    def form_runs(self, parts: Sequence[str], counts: ToyCounts | None) -> Iterator[Run]:
        by_run: dict[str, list[ToyAttempt]] = {}
        for part in parts:
            if self.has_records(part):
                for line in Path(part).read_bytes().splitlines():
                    attempt = ToyAttempt(**orjson.loads(line))
                    by_run.setdefault(attempt.run, []).append(attempt)
        for run_id in sorted(by_run):  # the records alone decide the order
            yield _toy_run(run_id, sorted(by_run[run_id], key=lambda a: a.number))


def _toy_run(run_id: str, attempts: list[ToyAttempt]) -> Run:
    prompt = (
        Message(role=Role.SYSTEM, content="You free disk space."),
        Message(role=Role.USER, content=f"Write code for: {attempts[0].strategy}"),
    )
    kept = tuple(
        Attempt(
            index=a.number - 1,
            outcome=(Outcome.SUCCESS if a.freed_kib > 0 else Outcome.DELETION_FAIL)
            if a.ran
            else Outcome.RUN_FAIL,
            message=a.reply,
            code=None,
        )
        for a in attempts
    )
    raw = attempts[-1].freed_kib
    freed = normalise_space_freed(raw, UnitConvention.KIB_NEW_MINUS_OLD)
    verdict = classify_run(
        attempts=kept,
        space_freed_bytes=freed,
        space_freed_known=True,
        strategy=attempts[0].strategy,
        has_strategy_prompt=True,
        has_code_prompt=True,
    )
    return Run(
        run_id=f"toy:{run_id}", source=attempts[0].source, copy_index=0, file_schema=ToyFormat.name,
        model_name=None, strategy=attempts[0].strategy, conversation=prompt, strategy_turns=1,
        code_turns=2, env_getter_prompt=(), attempts=kept, space_freed_raw=raw,
        space_freed_bytes=freed, unit_convention=UnitConvention.KIB_NEW_MINUS_OLD,
        run_class=verdict.run_class, class_reason=verdict.reason, class_detail=verdict.detail,
    )  # fmt: skip


class ToyFormat(RunFormat):
    """``{"toy_run": ..., "attempt": n, ...}``: one attempt a file."""

    name = "toy"
    counts_type = ToyCounts
    post_shard = ToyRunsStep()

    def detect(self, document: dict[str, Any]) -> bool:
        return "toy_run" in document

    def read(
        self, source: str, data: bytes, document: dict[str, Any], limits: ReadLimits
    ) -> RunFileResult:
        if not isinstance(document.get("attempt"), int):
            raise RunFileError(source, QuarantineReason.MISSING_KEY, "toy: no integer 'attempt'")
        attempt = ToyAttempt(
            source=source, run=document["toy_run"], number=document["attempt"],
            strategy=document["strategy"], reply=document["reply"], ran=document["ran"],
            freed_kib=document["freed_kib"],
        )  # fmt: skip
        return RunFileResult(
            source=source, size_bytes=len(data), file_format=self.name, pending=(attempt,)
        )


# --- the test ----------------------------------------------------------------------------

# (run, attempt, ran, KiB freed): a mixed run (two failures, then a success), a first try,
# and a run that never freed anything.
ATTEMPTS = [
    ("a", 1, False, 0.0), ("a", 2, True, 0.0), ("a", 3, True, 64.0),
    ("b", 1, True, 8.0),
    ("c", 1, False, 0.0), ("c", 2, False, 0.0),
]  # fmt: skip


def _reply(run: str, number: int) -> str:
    return (
        f"```python\nimport os  # run {run}, attempt {number}\nos.remove('/tmp/{run}{number}')\n```"
    )


@pytest.fixture
def toy():
    registered = register_run_format(ToyFormat())
    yield registered
    unregister_run_format(registered.name)


@pytest.fixture
def corpus(tmp_path: Path, data_file) -> Path:
    """Toy attempt files beside a v4 file: one folder, two formats."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for run, number, ran, kib in ATTEMPTS:
        document = {
            "toy_run": run, "attempt": number, "strategy": f"strategy {run}",
            "reply": _reply(run, number), "ran": ran, "freed_kib": kib,
        }  # fmt: skip
        (folder / f"{run}-{number}.json").write_text(json.dumps(document))
    (folder / "broken.json").write_text(json.dumps({"toy_run": "d", "attempt": "one"}))
    (folder / "v4_kib.json").write_bytes(Path(data_file("v4_kib.json")).read_bytes())
    return folder


def test_a_registered_format_is_read_into_pending_records(toy, corpus):
    result = read_run_file(str(corpus / "a-1.json"))
    assert (result.file_format, result.runs, len(result.pending)) == ("toy", (), 1)
    broken = read_run_file(str(corpus / "broken.json"))
    assert [(q.reason, q.detail) for q in broken.quarantined] == [
        (QuarantineReason.MISSING_KEY, "toy: no integer 'attempt'")
    ]
    assert "toy" in SCHEMAS[Run]["file_schema"].categories.to_list()


def test_ingest_reads_scores_and_pairs_the_toy_beside_v4(toy, corpus, tmp_path):
    # One file a shard: a toy run's attempts are read in different shards.
    report = ingest(
        [str(corpus)], str(tmp_path / "out"), limits=ReadLimits(), shard_bytes=1, workers=1
    )
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved == report.to_dict()
    assert saved["toy_attempts"] == 6
    assert saved["file_schemas"] == {"v4": 4, "toy": 3}
    assert saved["files_in"] == 8 == saved["files_read"] + saved["files_quarantined"]
    assert saved["quarantine_reasons"] == {"missing_key": 1}
    report.check_balance()

    runs = pl.read_parquet(tmp_path / "out" / "runs.parquet").filter(pl.col("file_schema") == "toy")
    classes = dict(zip(runs["run_id"], runs["run_class"].cast(pl.String), strict=True))
    assert classes == {"toy:a": "mixed", "toy:b": "first_try", "toy:c": "no_runnable"}
    scored = pl.read_parquet(tmp_path / "out" / "scored.parquet").filter(
        pl.col("run_id").str.starts_with("toy:")
    )
    assert scored.height > 0
    pairs = pl.read_parquet(tmp_path / "out" / "pairs.parquet").filter(
        pl.col("run_id").str.starts_with("toy:")
    )
    mixed = pairs.filter(pl.col("rule") == "mixed")
    assert mixed["chosen"].to_list() == [_reply("a", 3)] * 2
    assert mixed["rejected"].to_list() == [_reply("a", 1), _reply("a", 2)]
    garble = pairs.filter(pl.col("run_id") == "toy:b")
    assert sorted(garble["rule"].cast(pl.String)) == ["first_try_code", "first_try_strat"]
    assert garble["rejected"].null_count() == 2  # garble requests, filled by the build

    # However the folder is cut into shards, the same bytes.
    ingest(
        [str(corpus)], str(tmp_path / "one"), limits=ReadLimits(), shard_bytes=1 << 30, workers=1
    )
    for name in ("runs.parquet", "scored.parquet", "pairs.parquet", "report.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_the_dataset_build_takes_the_toy_through_garbling_and_export(toy, corpus, tmp_path):
    read = ReadSettings()
    work = str(tmp_path / "work")
    manifests = [build_shard(p, read) for p in plan_dataset([str(corpus)], work, 1, read)]
    for run_format in post_shard_formats():
        formed = build_post_shard(run_format, manifests, work)
        if formed is not None:
            manifests.append(formed)
    assert Path(manifests[-1].directory).parent.name == "toy-runs"
    requests, owner = pending_garble_requests(manifests, "k")
    save_garbled(
        [
            GarbleResult(
                run_id=r.run_id, prompt_kind=r.prompt_kind, rejected=corrupt(r.chosen, 0),
                garble_method=GarbleMethod.FALLBACK, draws=0, seed=0, new_tokens=0,
            )
            for r in requests
        ],
        owner,
        "k",
    )  # fmt: skip
    report, export = assemble_dataset(manifests, str(tmp_path / "ds"), work, "k", ExportSettings())
    assert report.to_dict()["toy_attempts"] == 6
    assert export.unfilled_pairs_dropped == 0
    rows = [
        orjson.loads(line)
        for name in ("dpo/train.jsonl", "dpo/eval.jsonl")
        for line in (tmp_path / "ds" / name).read_bytes().splitlines()
    ]
    toy_rules = Counter(r["rule"] for r in rows if r["run_id"].startswith("toy:"))
    assert toy_rules == {"mixed": 2, "first_try_code": 1, "first_try_strat": 1}
    assert {r["prompt"][-1]["content"] for r in rows if r["run_id"] == "toy:a"} == {
        "Write code for: strategy a"
    }


def test_unregistered_the_toy_is_an_unknown_schema_again(corpus):
    assert "toy" not in [f.name for f in run_formats()]
    (entry,) = read_run_file(str(corpus / "a-1.json")).quarantined
    assert entry.reason is QuarantineReason.UNKNOWN_SCHEMA
    assert SCHEMAS[Run]["file_schema"].categories.to_list() == ["v4", "legacy_2024_12", "v5"]


class TestRegistry:
    def test_built_in_formats_in_the_order_they_are_asked(self):
        assert [f.name for f in run_formats()][:3] == ["v4", "legacy_2024_12", "v5"]
        assert [f.name for f in post_shard_formats()] == ["v5"]
        with pytest.raises(ValueError, match="built-in"):
            unregister_run_format("v5")

    def test_a_name_part_file_or_report_key_of_another_format_is_refused(self, toy):
        with pytest.raises(ValueError, match="name of its own"):
            register_run_format(ToyFormat())

        class SameKeys(ToyFormat):
            name = "toy2"
            post_shard = None

        with pytest.raises(ValueError, match=r"report keys \['toy_attempts'\]"):
            register_run_format(SameKeys())

        class SamePart(ToyFormat):
            name = "toy3"
            counts_type = None

        with pytest.raises(ValueError, match=r"part file 'toy_attempts\.jsonl'"):
            register_run_format(SamePart())
        assert [f.name for f in run_formats()][-1] == "toy"

    def test_no_format_may_take_a_key_of_the_reports(self):
        own = set(Report().to_dict()) - {
            key for f in run_formats() if f.counts_type for key in f.counts_type().to_dict()
        }
        build = set(BuildReport.__dataclass_fields__) - {"ingest", "shards_total", "shards_cached"}
        assert own | build | {"shards"} <= _REPORT_KEYS
        assert format_named("v5").counts_type is not None
