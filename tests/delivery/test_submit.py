"""Submission: deadlines that fire, downloads that stay inside, only what a job reads is shipped."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from agir_retrain.tasks.delivery.job_output import JobTimeoutError, LogTail
from agir_retrain.tasks.delivery.remote import (
    download_folder,
    needs_shared_storage,
    remote_config,
    shared_job_folder,
)
from agir_retrain.tasks.delivery.submit import docker_mounts, run_streaming
from agir_retrain.tasks.errors import ConfigError, DatasetError, SubmitError
from agir_retrain.tasks.settings.models import TrainConfig


class TestRunStreaming:
    def test_lines_reach_the_caller_and_the_status_is_kept(self):
        lines: list[str] = []
        status, tail = run_streaming(
            ["sh", "-c", "echo one; echo two >&2; printf 'no newline'; exit 3"],
            on_line=lines.append,
            timeout_s=30,
        )
        assert status == 3
        assert lines == ["one", "two", "no newline"]
        assert tail == "one\ntwo\nno newline"

    def test_a_job_past_its_deadline_is_stopped_and_reported_as_a_timeout(self):
        started = time.monotonic()
        with pytest.raises(JobTimeoutError, match=r"timed out: stopped after 1 s") as failure:
            run_streaming(["sleep", "4"], timeout_s=1)
        assert time.monotonic() - started < 3
        assert isinstance(failure.value, SubmitError)  # callers that catch SubmitError see it

    def test_the_whole_process_group_is_stopped(self, tmp_path):
        pid_file = tmp_path / "child.pid"
        script = f"sleep 60 & echo $! > {pid_file}; echo started; wait"
        with pytest.raises(JobTimeoutError) as failure:
            run_streaming(["sh", "-c", script], timeout_s=1)
        assert "started" in failure.value.log_tail
        child = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the job's child outlived the deadline"

    def test_a_silent_job_that_closed_its_output_still_times_out(self):
        with pytest.raises(JobTimeoutError):
            run_streaming(["sh", "-c", "exec >/dev/null 2>&1; sleep 4"], timeout_s=1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead
        return stat.read().split()[2] != "Z"


def test_log_tail_joins_split_lines_and_split_characters():
    lines: list[str] = []
    tail = LogTail(lines.append, keep=2)
    for chunk in (b"first li", b"ne\nsecond \xc3", b"\xa9t\xc3\xa9\r\nthird"):
        tail.feed(chunk)
    tail.close()
    assert lines == ["first line", "second été", "third"]
    assert tail.text == "second été\nthird"


class TestDownloadFolder:
    @pytest.fixture
    def store(self):
        root = f"/shared-{uuid.uuid4().hex[:8]}"
        fs = fsspec.filesystem("memory")
        yield fs, root
        fs.rm(root, recursive=True)

    def test_copies_every_file_inside(self, store, tmp_path):
        fs, root = store
        fs.pipe(f"{root}/job/adapter.bin", b"w")
        fs.pipe(f"{root}/job/sub/metrics.json", b"{}")
        download_folder(f"memory://{root}/job", tmp_path / "out")
        assert (tmp_path / "out" / "adapter.bin").read_bytes() == b"w"
        assert (tmp_path / "out" / "sub" / "metrics.json").read_bytes() == b"{}"

    @pytest.mark.parametrize("key", ["../../evil.txt", "a/../../../evil.txt", "sub/../../x"])
    def test_keys_climbing_out_are_refused_and_nothing_is_written(self, store, tmp_path, key):
        fs, root = store
        fs.pipe(f"{root}/job/ok.txt", b"fine")
        fs.pipe(f"{root}/job/{key}", b"evil")
        target = tmp_path / "deep" / "out"
        with pytest.raises(ConfigError, match="outside"):
            download_folder(f"memory://{root}/job", target)
        written = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert written == []


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A dataset folder as build-dataset leaves it: DPO files plus bulk the job never reads."""
    folder = tmp_path / "dataset"
    (folder / "dpo").mkdir(parents=True)
    (folder / ".work" / "shards").mkdir(parents=True)
    row = {"prompt": "p", "chosen": "c", "rejected": "r"}
    (folder / "dpo" / "train.jsonl").write_text(json.dumps(row) + "\n")
    (folder / "dpo" / "eval.jsonl").write_text(json.dumps(row | {"chosen": "e"}) + "\n")
    (folder / "pairs.parquet").write_bytes(b"PAR1" * 1000)
    (folder / ".work" / "shards" / "big.parquet").write_bytes(b"x" * 10_000)
    return folder


class TestRemoteConfig:
    def test_a_local_dataset_is_uploaded_to_shared_storage(self, dataset, tmp_path):
        shared_root = f"memory://agir-shared-{uuid.uuid4().hex[:8]}"
        config = TrainConfig(
            dataset=str(dataset),
            out=str(tmp_path / "adapter"),
            submit={"backend": "prefect", "shared_storage": shared_root},
        )
        job = shared_job_folder(config)
        remote = remote_config(config, job)
        fs = fsspec.filesystem("memory")
        assert remote.dataset == f"{job}/dataset/train.jsonl"
        assert remote.eval_dataset == f"{job}/dataset/eval.jsonl"
        assert fs.cat(remote.dataset) == (dataset / "dpo" / "train.jsonl").read_bytes()
        assert fs.cat(remote.eval_dataset) == (dataset / "dpo" / "eval.jsonl").read_bytes()
        shipped = sorted(p.removeprefix(fs._strip_protocol(job)) for p in fs.find(job))
        assert shipped == ["/dataset/eval.jsonl", "/dataset/train.jsonl"]  # not the bulk
        assert remote.out == f"{job}/out"
        assert remote.submit.backend == "local"
        fs.rm(shared_root.removeprefix("memory://"), recursive=True)

    def test_a_local_dataset_without_shared_storage_is_a_clear_error(self, dataset, tmp_path):
        config = TrainConfig(
            dataset=str(dataset), out="s3://bucket/out", submit={"backend": "prefect"}
        )
        with pytest.raises(ConfigError, match=r"cannot see .* set submit\.shared_storage"):
            shared_job_folder(config)
        with pytest.raises(ConfigError, match="shared_storage"):
            remote_config(config, None)

    def test_urls_pass_through_untouched(self):
        config = TrainConfig(dataset="s3://b/d", out="s3://b/o", submit={"backend": "prefect"})
        remote = remote_config(config, None)
        assert (remote.dataset, remote.out, remote.submit.backend) == (
            "s3://b/d",
            "s3://b/o",
            "local",
        )

    def test_a_gguf_base_is_converted_here_and_the_job_gets_the_folder(self, gguf_base, caplog):
        """The remote job never reads the GGUF file (nor needs gguf): it loads the folder made
        here, which, like any local folder, it must see at the same path."""
        from agir_retrain.tasks.models.resolve import resolve_model

        config = TrainConfig(
            dataset="s3://b/d", out="s3://b/o", base_model=gguf_base, submit={"backend": "prefect"}
        )
        with caplog.at_level("WARNING"):
            remote = remote_config(config, None)
        assert remote.base_model == resolve_model(gguf_base)
        assert Path(remote.base_model, "model.safetensors").is_file()
        assert "must see it at the same path" in caplog.text


def test_a_local_job_converts_a_gguf_base_before_launching(monkeypatch, tmp_path):
    """A GGUF file transformers cannot read stops the submission in one line: no rank starts,
    nothing is written."""
    from agir_retrain.tasks.delivery.submit import submit_local
    from agir_retrain.tasks.synth.tiny_gguf import make_tiny_gguf

    monkeypatch.setenv("AGIR_CACHE_DIR", str(tmp_path / "cache"))
    bad = make_tiny_gguf(tmp_path / "rwkv.gguf", architecture="rwkv7")
    config = TrainConfig(dataset=str(tmp_path), base_model=str(bad), out=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="architecture 'rwkv7' is not supported") as error:
        submit_local(config)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def model_folder(tmp_path) -> str:
    """A local model folder (its contents do not matter to what is mounted)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


class TestDockerMounts:
    def test_a_dataset_file_mounts_only_that_file_and_its_eval(
        self, dataset, model_folder, tmp_path
    ):
        config = TrainConfig(
            dataset=str(dataset / "dpo" / "train.jsonl"),
            base_model=model_folder,
            out=str(tmp_path / "o"),
        )
        mounts, inside = docker_mounts(config)
        read_only = {str(m.host): m.container for m in mounts if m.read_only}
        assert read_only == {
            str(dataset / "dpo" / "train.jsonl"): "/data/train.jsonl",
            str(dataset / "dpo" / "eval.jsonl"): "/data/eval.jsonl",
            str(Path(model_folder).resolve()): "/model",
        }
        assert [m.container for m in mounts if not m.read_only] == ["/out"]
        assert inside == {
            "dataset": "/data/train.jsonl",
            "eval_dataset": "/data/eval.jsonl",
            "out": "/out",
            "base_model": "/model",
        }

    def test_a_dataset_folder_mounts_its_training_files_not_the_folder(
        self, dataset, model_folder, tmp_path
    ):
        config = TrainConfig(dataset=str(dataset), base_model=model_folder, out=str(tmp_path / "o"))
        mounts, _ = docker_mounts(config)
        assert str(dataset) not in {str(m.host) for m in mounts}
        assert {m.host.name for m in mounts if m.read_only} >= {"train.jsonl", "eval.jsonl"}

    def test_a_gguf_base_mounts_its_converted_folder(self, dataset, gguf_base, tmp_path):
        from agir_retrain.tasks.models.resolve import resolve_model

        config = TrainConfig(dataset=str(dataset), base_model=gguf_base, out=str(tmp_path / "o"))
        mounts, inside = docker_mounts(config)
        model = {str(m.host): m.container for m in mounts if m.container == "/model"}
        assert model == {str(Path(resolve_model(gguf_base)).resolve()): "/model"}
        assert inside["base_model"] == "/model"

    def test_a_hub_id_needs_the_network_and_says_so(self, dataset, tmp_path):
        config = TrainConfig(dataset=str(dataset), base_model="org/model", out=str(tmp_path / "o"))
        with pytest.raises(ConfigError, match=r"hub id.*network off.*submit\.network=true"):
            docker_mounts(config)
        online = config.model_copy(
            update={"submit": config.submit.model_copy(update={"network": True})}
        )
        mounts, inside = docker_mounts(online)
        assert "base_model" not in inside
        assert "/model" not in {m.container for m in mounts}


PROMPT = [{"role": "user", "content": "Free some space."}]
ANSWER = [{"role": "assistant", "content": "```python\nprint('ok')\n```"}]


@pytest.fixture
def every_split(dataset, tmp_path) -> dict[str, Path]:
    """The dataset flow's SFT and KTO splits beside the DPO ones, a rehearsal file, a scenario."""
    from agir_retrain.tasks.environment.profiles import build_profile
    from agir_retrain.tasks.environment.scenario import scenario_to_json

    rows = {
        "sft": {"prompt": PROMPT, "completion": ANSWER, "prompt_kind": "code", "run_id": "r1"},
        "kto": {"prompt": PROMPT, "completion": ANSWER, "label": True},
    }
    for objective, row in rows.items():
        (dataset / objective).mkdir()
        for split in ("train", "eval"):
            (dataset / objective / f"{split}.jsonl").write_text(
                json.dumps(row | {"split": split}) + "\n"
            )
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": PROMPT + ANSWER}) + "\n")
    scenario = tmp_path / "small.json"
    scenario.write_bytes(scenario_to_json(build_profile("debian-like")))
    return {"dataset": dataset, "rehearsal": chat, "scenario": scenario}


def _objective_config(objective: str, files: dict[str, Path], **fields) -> TrainConfig:
    sections = {
        "sft": {"sft": {"rehearsal_file": str(files["rehearsal"])}},
        "grpo": {"grpo": {"scenarios": ["debian-like", str(files["scenario"])]}},
    }
    return TrainConfig(
        dataset=str(files["dataset"]), objective=objective, **sections.get(objective, {}), **fields
    )


# What each objective's job reads: (shipped name, source under the dataset folder or fixture key).
SHIPPED = {
    "dpo": {"train.jsonl": "dpo/train.jsonl", "eval.jsonl": "dpo/eval.jsonl"},
    "sft": {"train.jsonl": "sft/train.jsonl", "eval.jsonl": "sft/eval.jsonl",
            "rehearsal.jsonl": "rehearsal"},
    "kto": {"train.jsonl": "kto/train.jsonl", "eval.jsonl": "kto/eval.jsonl"},
    "grpo": {"train.jsonl": "sft/train.jsonl", "scenarios/1-small.json": "scenario"},
}  # fmt: skip


def _source(files: dict[str, Path], where: str) -> Path:
    return files[where] if where in files else files["dataset"] / where


def _named(config: TrainConfig) -> dict[str, str | None]:
    """The settings a job reads its files from."""
    named = {"dataset": config.dataset, "eval_dataset": config.eval_dataset}
    if config.objective == "sft":
        named["rehearsal"] = config.sft.rehearsal_file
    if config.objective == "grpo":
        named["scenarios"] = ",".join(config.grpo.scenarios)
    return named


class TestEveryObjectiveShipsItsOwnFiles:
    @pytest.mark.parametrize("objective", ["dpo", "sft", "kto", "grpo"])
    def test_shared_storage_gets_exactly_the_objectives_files(
        self, objective, every_split, tmp_path
    ):
        shared_root = f"memory://agir-shared-{uuid.uuid4().hex[:8]}"
        config = _objective_config(
            objective,
            every_split,
            out=str(tmp_path / "adapter"),
            submit={"backend": "prefect", "shared_storage": shared_root},
        )
        job = shared_job_folder(config)
        remote = remote_config(config, job)
        fs = fsspec.filesystem("memory")
        root = fs._strip_protocol(job)
        shipped = {p.removeprefix(f"{root}/dataset/"): fs.cat(p) for p in fs.find(job)}
        expected = SHIPPED[objective]
        assert sorted(shipped) == sorted(expected)  # not the other objectives', not the bulk
        for name, where in expected.items():
            assert shipped[name] == _source(every_split, where).read_bytes(), name
        at = f"{job}/dataset"
        assert _named(remote) == {
            "dpo": {"dataset": f"{at}/train.jsonl", "eval_dataset": f"{at}/eval.jsonl"},
            "sft": {"dataset": f"{at}/train.jsonl", "eval_dataset": f"{at}/eval.jsonl",
                    "rehearsal": f"{at}/rehearsal.jsonl"},
            "kto": {"dataset": f"{at}/train.jsonl", "eval_dataset": f"{at}/eval.jsonl"},
            "grpo": {"dataset": f"{at}/train.jsonl", "eval_dataset": None,
                     "scenarios": f"debian-like,{at}/scenarios/1-small.json"},
        }[objective]  # fmt: skip
        fs.rm(shared_root.removeprefix("memory://"), recursive=True)

    @pytest.mark.parametrize("objective", ["dpo", "sft", "kto", "grpo"])
    def test_docker_mounts_exactly_the_objectives_files(
        self, objective, every_split, model_folder, tmp_path
    ):
        config = _objective_config(
            objective, every_split, base_model=model_folder, out=str(tmp_path / "o")
        )
        mounts, inside = docker_mounts(config)
        read_only = {m.container: m.host for m in mounts if m.read_only}
        assert read_only.pop("/model") == Path(model_folder).resolve()
        assert read_only == {
            f"/data/{name}": _source(every_split, where).resolve()
            for name, where in SHIPPED[objective].items()
        }
        moved = config.model_copy(update=inside)
        assert {value for value in _named(moved).values() if value} <= {
            *read_only,
            "debian-like,/data/scenarios/1-small.json",
        }
        assert moved.dataset == "/data/train.jsonl"
        assert (moved.out, moved.base_model) == ("/out", "/model")

    def test_a_missing_rehearsal_file_stops_the_shipping_in_one_line(self, every_split, tmp_path):
        every_split["rehearsal"].unlink()
        config = _objective_config(
            "sft",
            every_split,
            out=str(tmp_path / "adapter"),
            submit={"backend": "prefect", "shared_storage": f"file://{tmp_path / 'shared'}"},
        )
        with pytest.raises(
            DatasetError, match=r"^sft\.rehearsal_file='.*chat\.jsonl': no such file$"
        ):
            remote_config(config, shared_job_folder(config))
        assert not (tmp_path / "shared").exists()  # checked before anything is uploaded

    def test_a_missing_objective_split_is_named(self, dataset, model_folder, tmp_path):
        config = TrainConfig(
            dataset=str(dataset), objective="kto", base_model=model_folder, out=str(tmp_path / "o")
        )
        with pytest.raises(DatasetError, match=r"kto/train\.jsonl: no such file"):
            docker_mounts(config)

    def test_a_local_scenario_file_needs_shared_storage_even_with_url_data(self, every_split):
        config = _objective_config("grpo", every_split).model_copy(
            update={"dataset": "s3://b/d", "out": "s3://b/o"}
        )
        assert needs_shared_storage(config)
        with pytest.raises(ConfigError, match=r"cannot see grpo\.scenarios\[1\]"):
            remote_config(config, None)


def test_the_cli_trains_through_the_one_submit_and_its_deadline(dataset, model_folder, tmp_path):
    """The CLI's local path is the same child process as the flows' (so the deadline holds)."""
    from typer.testing import CliRunner

    from agir_retrain.flows.cli import app

    started = time.monotonic()
    outcome = CliRunner().invoke(
        app,
        ["train", str(dataset), "--base-model", model_folder, "--out", str(tmp_path / "adapter"),
         "--set", "submit.timeout_s=1"],
    )  # fmt: skip
    assert outcome.exit_code == 2, outcome.output
    assert "timed out: stopped after 1 s" in outcome.output
    assert time.monotonic() - started < 30
