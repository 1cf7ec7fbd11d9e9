"""The docker backend's choices that need no engine: pins the base image must hold, what a
nested sandbox is given, and what cannot run in a docker job."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

from agir_retrain.tasks.delivery.base_image import unmet_pins
from agir_retrain.tasks.delivery.docker_jobs import DockerJob, security_options

SECCOMP_ONLY = {"SecurityOptions": ["name=seccomp,profile=default"]}  # docker info, as here
WITH_APPARMOR = {"SecurityOptions": ["name=apparmor", "name=seccomp,profile=default"]}


def test_unmet_pins_are_the_missing_and_the_different_ones(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "# pinned\n"
        f"pip=={version('pip')}\n"
        f"PyYAML=={version('pyyaml')}  # the name as pip freeze spells it\n"
        "pip==0.0.1\n"
        "no-such-package-agir==1.0\n"
    )
    assert unmet_pins(constraints) == ["pip==0.0.1", "no-such-package-agir==1.0"]


@pytest.mark.parametrize(
    ("nested", "engine", "expected"),
    [
        (False, SECCOMP_ONLY, []),
        (False, WITH_APPARMOR, []),
        (True, SECCOMP_ONLY, ["seccomp=unconfined"]),
        (True, WITH_APPARMOR, ["seccomp=unconfined", "apparmor=unconfined"]),
    ],
)
def test_only_a_nested_sandbox_is_unconfined_and_apparmor_only_where_enforced(
    tmp_path, nested, engine, expected
):
    job = DockerJob(context=tmp_path, nested_sandbox=nested)
    assert security_options(job, engine) == expected


def test_grpo_with_the_docker_sandbox_is_refused_at_once_in_a_docker_job(tmp_path):
    from typer.testing import CliRunner

    from agir_retrain.flows.cli import app

    (tmp_path / "data" / "sft").mkdir(parents=True)
    row = {"prompt": "free space", "completion": "x", "prompt_kind": "code", "run_id": "r"}
    (tmp_path / "data" / "sft" / "train.jsonl").write_text(json.dumps(row) + "\n")
    outcome = CliRunner().invoke(
        app,
        ["train", str(tmp_path / "data"), "--objective", "grpo", "--backend", "docker",
         "--out", str(tmp_path / "out"), "--set", "grpo.environment.backend=docker"],
    )  # fmt: skip
    assert outcome.exit_code == 2
    assert (
        "grpo.environment.backend='docker' cannot run inside a docker job (no Docker engine "
        "there): use grpo.environment.backend=bwrap, or submit.backend=local"
    ) in outcome.output
    assert not (tmp_path / "out").exists()  # refused before anything was written
