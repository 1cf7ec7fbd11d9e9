"""Tasks from a built dataset's held-out runs, env-block replacement, and the JSONL files."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest

from agir_retrain.tasks.dataset.export import export_dataset
from agir_retrain.tasks.environment.contract import Completion, EvalTask
from agir_retrain.tasks.environment.scenario import describe_scenario, load_scenario
from agir_retrain.tasks.evaluation.completions import read_completions, write_completions
from agir_retrain.tasks.evaluation.eval_tasks import (
    POINTER,
    bind_scenarios,
    held_out_run_ids,
    read_tasks,
    replace_env_blocks,
    tasks_from_dataset,
    write_tasks,
)
from agir_retrain.tasks.evaluation.jsonl import EvalInputError
from agir_retrain.tasks.settings.models import ExportSettings
from agir_retrain.tasks.synth.corpus import write_corpus


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, ingest_with_stand_ins) -> Path:
    """A dataset built from the synthetic corpus, a third of its runs held out."""
    root = tmp_path_factory.mktemp("eval-dataset")
    write_corpus(root / "corpus", runs=60, seed=4, env_kib=2)
    folder = ingest_with_stand_ins(root / "dataset", [str(root / "corpus" / "runs")])
    export_dataset(str(folder), str(folder), ExportSettings(eval_share=0.4, split_seed=1))
    return folder


def describe(ref: str) -> str:
    return describe_scenario(load_scenario(ref))


class TestFromDataset:
    def test_tasks_are_the_held_out_runs_code_prompts(self, dataset: Path) -> None:
        held_out = held_out_run_ids(str(dataset))
        eval_rows = pl.read_ndjson(dataset / "dpo" / "eval.jsonl")
        train_ids = set(pl.read_ndjson(dataset / "dpo" / "train.jsonl").get_column("run_id"))
        assert held_out == sorted(set(eval_rows.get_column("run_id")))
        assert len(held_out) >= 4
        assert not set(held_out) & train_ids  # nothing the trainer saw

        tasks = tasks_from_dataset(str(dataset), scenarios=["debian-like"])
        runs = pl.read_parquet(dataset / "runs.parquet").filter(pl.col("run_id").is_in(held_out))
        with_code = runs.filter(pl.col("code_turns") > 0)
        assert [t.task_id for t in tasks] == sorted(f"{r}/code" for r in with_code["run_id"])
        first = with_code.sort("run_id").row(0, named=True)
        assert tasks[0].prompt == tuple(
            {"role": m["role"], "content": m["content"]}
            for m in first["conversation"][: first["code_turns"]]
        )
        assert tasks[0].prompt[-1]["role"] == "user"  # ends with the code request
        assert "generate Python code" in tasks[0].prompt[-1]["content"]
        assert all(t.env_blocks == "prompt" for t in tasks)

    def test_scenarios_round_robin_and_strategy_prompts(self, dataset: Path) -> None:
        tasks = tasks_from_dataset(
            str(dataset), scenarios=["heavy-mix", "few-large"], include_strategy_prompts=True
        )
        ids = [t.task_id for t in tasks]
        assert ids == sorted(ids)
        assert {i.rsplit("/", 1)[1] for i in ids} == {"code", "strategy"}
        assert [t.scenario for t in tasks[:4]] == ["heavy-mix", "few-large"] * 2
        strategy = next(t for t in tasks if t.task_id.endswith("/strategy"))
        assert "strategies" in strategy.prompt[-1]["content"]

    def test_env_blocks_replaced_by_the_scenario(self, dataset: Path) -> None:
        kept = tasks_from_dataset(str(dataset), scenarios=["debian-like"], max_tasks=2)
        tasks = tasks_from_dataset(
            str(dataset),
            scenarios=["debian-like"],
            env_blocks="scenario",
            max_tasks=2,
            describe=describe,
        )
        description = describe("debian-like")
        for before, after in zip(kept, tasks, strict=True):
            text_before = "\n".join(m["content"] for m in before.prompt)
            text = "\n".join(m["content"] for m in after.prompt)
            assert "<BasicEnvInfos>" in text_before
            assert "total_storage" in text_before
            assert after.env_blocks == "scenario"
            assert text.count(description) == 1
            assert "total_storage" not in text  # the old machine's figures are gone
            assert f"<SpecialEnvInfos>\n{POINTER}\n</SpecialEnvInfos>" in text
            assert after.prompt[-1] == before.prompt[-1]  # the request itself is untouched

    def test_not_a_built_dataset(self, tmp_path: Path) -> None:
        with pytest.raises(EvalInputError, match=r"no dpo/eval\.jsonl"):
            tasks_from_dataset(str(tmp_path), scenarios=["debian-like"])


class TestEnvBlocks:
    def test_first_block_gets_the_description_later_ones_a_pointer(self) -> None:
        prompt = (
            {"role": "user", "content": "a <BasicEnvInfos>\nold\n</BasicEnvInfos> b"},
            {"role": "user", "content": "<SpecialEnvInfos>x</SpecialEnvInfos>"},
        )
        replaced, count = replace_env_blocks(prompt, "NEW")
        assert count == 2
        assert replaced[0]["content"] == "a <BasicEnvInfos>\nNEW\n</BasicEnvInfos> b"
        assert replaced[1]["content"] == f"<SpecialEnvInfos>\n{POINTER}\n</SpecialEnvInfos>"

    def test_a_prompt_without_blocks_records_prompt(self) -> None:
        (task,) = bind_scenarios(
            [("t", ({"role": "user", "content": "hi"},))], ["debian-like"], "scenario", describe
        )
        assert task.env_blocks == "prompt"
        assert task.prompt == ({"role": "user", "content": "hi"},)


def write_lines(path: Path, *lines: object) -> str:
    path.write_bytes(
        b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in lines)
    )
    return str(path)


GOOD = {
    "task_id": "t1",
    "prompt": [{"role": "user", "content": "free space"}],
    "scenario": "few-large",
}


class TestTasksFile:
    def test_round_trip_with_exactly_the_contract_keys(self, tmp_path: Path) -> None:
        tasks = [
            EvalTask(task_id="b", prompt=({"role": "user", "content": "x"},), scenario="s.json"),
            EvalTask(
                task_id="a",
                prompt=({"role": "system", "content": "y"},),
                scenario="heavy-mix",
                env_blocks="scenario",
            ),
        ]
        path = str(tmp_path / "tasks.jsonl")
        write_tasks(path, tasks)
        lines = Path(path).read_bytes().splitlines()
        assert list(orjson.loads(lines[0])) == ["task_id", "prompt", "scenario", "env_blocks"]
        assert read_tasks(path) == sorted(tasks, key=lambda t: t.task_id)

    def test_a_users_file_with_extra_keys(self, tmp_path: Path) -> None:
        path = write_lines(
            tmp_path / "t.jsonl", GOOD | {"source": "mine"}, b"", GOOD | {"task_id": "t0"}
        )
        assert [t.task_id for t in read_tasks(path)] == ["t0", "t1"]

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            (b"{not json", "not valid JSON"),
            (b"[1, 2]", "expected a JSON object"),
            ({"prompt": GOOD["prompt"], "scenario": "x"}, "missing key 'task_id'"),
            (GOOD | {"prompt": "free space"}, "'prompt' must be list"),
            (GOOD | {"prompt": []}, "'prompt' is empty"),
            (GOOD | {"prompt": [{"role": "robot", "content": "x"}]}, "prompt message 0"),
            (GOOD | {"scenario": ""}, "must not be empty"),
            (GOOD | {"env_blocks": "both"}, "'env_blocks' must be one of"),
            (GOOD, "duplicate task_id 't1' (first on line 1)"),
        ],
    )
    def test_bad_line_is_one_line_naming_file_and_line(
        self, tmp_path: Path, line: object, message: str
    ) -> None:
        path = write_lines(tmp_path / "t.jsonl", GOOD, line)
        with pytest.raises(EvalInputError) as caught:
            read_tasks(path)
        text = str(caught.value)
        assert text.startswith(f"{path}:2: ")
        assert message in text
        assert "\n" not in text

    def test_empty_and_missing_files(self, tmp_path: Path) -> None:
        with pytest.raises(EvalInputError, match="no tasks"):
            read_tasks(write_lines(tmp_path / "t.jsonl", b""))
        with pytest.raises(EvalInputError, match="no such file"):
            read_tasks(str(tmp_path / "absent.jsonl"))


class TestCompletionsFile:
    def test_round_trip_sorted(self, tmp_path: Path) -> None:
        completions = [
            Completion(task_id="t2", model="m", sample=1, completion="b"),
            Completion(task_id="t1", model="m", sample=0, completion="```python\nx\n```"),
        ]
        path = str(tmp_path / "c.jsonl")
        write_completions(path, completions)
        first = orjson.loads(Path(path).read_bytes().splitlines()[0])
        assert list(first) == ["task_id", "model", "sample", "completion"]
        assert read_completions(path, {"t1", "t2"}) == completions[::-1]

    @pytest.mark.parametrize(
        ("row", "message"),
        [
            ({"task_id": "t9", "model": "m", "sample": 0, "completion": ""}, "task 't9' is not in"),
            (
                {"task_id": "t1", "model": "m", "sample": "0", "completion": ""},
                "'sample' must be int",
            ),
            (
                {"task_id": "t1", "model": "m", "sample": True, "completion": ""},
                "'sample' must be int",
            ),
            ({"task_id": "t1", "model": "m", "sample": -1, "completion": ""}, "0 or more"),
            (  # JSON integers are unbounded; the report's columns are not
                {"task_id": "t1", "model": "m", "sample": 18446744073709551615, "completion": ""},
                "'sample' must be 0 or more and at most 2147483647, got 18446744073709551615",
            ),
            ({"task_id": "t1", "model": "", "sample": 0, "completion": ""}, "must not be empty"),
            ({"task_id": "t1", "model": "m", "sample": 0}, "missing key 'completion'"),
            (
                {"task_id": "t1", "model": "m", "sample": 0, "completion": "x"},
                "duplicate completion",
            ),
        ],
    )
    def test_bad_line(self, tmp_path: Path, row: dict, message: str) -> None:
        first = {"task_id": "t1", "model": "m", "sample": 0, "completion": "a"}
        path = write_lines(tmp_path / "c.jsonl", first, row)
        with pytest.raises(EvalInputError) as caught:
            read_completions(path, {"t1"})
        assert str(caught.value).startswith(f"{path}:2: ")
        assert message in str(caught.value)
        assert "\n" not in str(caught.value)

    def test_a_lone_surrogate_read_by_the_standard_library_is_a_bad_line(
        self, tmp_path: Path, monkeypatch
    ) -> None:
        """Where orjson is missing (GPU machines) json reads \\ud800; nothing could write it."""
        import sys

        monkeypatch.setitem(sys.modules, "orjson", None)
        path = tmp_path / "c.jsonl"
        path.write_text('{"task_id": "t1", "model": "m\\ud800", "sample": 0, "completion": ""}\n')
        with pytest.raises(EvalInputError, match="'model' is not valid UTF-8"):
            read_completions(str(path), {"t1"})
