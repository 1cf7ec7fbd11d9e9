"""GRPO: learn from running sampled programs. Code prompts bound to scenarios, the reward, the config.

Each step samples ``num_generations`` completions per prompt; each completion's program
runs in a fresh copy of its prompt's scenario (``run_episode``), and its reward is
``episode_reward`` (freed share minus the damage and did-not-run penalties of
``grpo.environment.reward``). The episodes of one step run in parallel: local processes,
or Ray tasks when ``grpo.ray`` is set. Besides TRL's own ``reward``/``reward_std``, every
step logs its episodes, their reward mean and spread, and the share of programs that ran.
"""

from __future__ import annotations

import logging
import posixpath
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, PositiveInt

from agir_retrain.tasks.environment.contract import Completion, Episode, EvalTask, Scenario
from agir_retrain.tasks.environment.reward import episode_reward
from agir_retrain.tasks.errors import ConfigError, DatasetError
from agir_retrain.tasks.filenames import COMPLETION_TRAIN
from agir_retrain.tasks.io import is_url, local_path
from agir_retrain.tasks.jsonl import read_jsonl
from agir_retrain.tasks.objectives import (
    Curve,
    DataFiles,
    SettingFile,
    Split,
    TrainingData,
)
from agir_retrain.tasks.settings.environment import EnvironmentSettings
from agir_retrain.tasks.settings.train import ScheduleSettings
from agir_retrain.tasks.training.completions import check_completion_rows, code_prompts
from agir_retrain.tasks.training.files import locate_split
from agir_retrain.tasks.training.objective import TrlObjective

if TYPE_CHECKING:
    from agir_retrain.tasks.settings.train import TrainConfig

log = logging.getLogger(__name__)

MODEL_LABEL = "policy"
SCENARIOS_KEY = "grpo.scenarios"
SCENARIO_FOLDER = "scenarios"  # where shipped scenario files go in a job elsewhere
# Why a scenario file named inside a tasks file cannot go to a job elsewhere, and what to do.
NO_SETTING_FIX = (
    "the tasks file names the scenario file {path!r}, which a job on another machine cannot "
    "see; name built-in profiles in the tasks file, or train on sft/train.jsonl with the file "
    "in grpo.scenarios"
)


class GrpoSettings(ScheduleSettings):
    """GRPO with an execution reward: each completion's program runs in the environment."""

    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate (LoRA parameters).")
    batch_size: PositiveInt = Field(
        1, description="Prompts per device per optimizer step (each sampled num_generations times)."
    )
    gradient_accumulation: PositiveInt = Field(
        1, description="Prompt batches accumulated per optimizer update."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    num_generations: PositiveInt = Field(
        8,
        ge=2,
        description="Completions sampled per prompt (the group whose rewards are compared).",
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the completions.")
    beta: float = Field(
        0.04, ge=0, description="KL coefficient against the base (the adapter disabled); 0: none."
    )
    max_prompt_length: PositiveInt = Field(
        1536, description="Tokens per prompt; longer prompts are shortened in their middle."
    )
    max_completion_length: PositiveInt = Field(
        512, description="Most tokens sampled per completion."
    )
    scenarios: list[str] = Field(
        default_factory=lambda: ["debian-like"],
        min_length=1,
        description="Scenarios (profile names or files) dealt round-robin over the prompts sorted by id.",
    )
    workers: PositiveInt = Field(
        2,
        description="Local processes running one step's episodes (Ray runs them when `ray` is set).",
    )
    ray: bool = Field(
        False,
        description="Run each step's episodes as Ray tasks on the cluster `ray.init()` finds.",
    )
    environment: EnvironmentSettings = Field(
        default_factory=EnvironmentSettings,
        description="The sandbox the episodes run in, and the reward weights (environment.reward).",
    )


class EpisodeReward:
    """TRL reward function: run each completion's program in its scenario, return the rewards.

    Counts what it ran (``episodes``, ``ran``) and logs per step through TRL's ``log_metric``.
    """

    __name__ = "episode_reward"  # TRL names the reward's metrics after it

    def __init__(
        self,
        scenarios: dict[str, Scenario],
        settings: EnvironmentSettings,
        *,
        workers: int = 1,
        use_ray: bool = False,
    ) -> None:
        self.scenarios = scenarios
        self.settings = settings
        self.workers = workers
        self.use_ray = use_ray
        self.episodes = 0
        self.ran = 0
        self.harness_failures = 0  # episodes the sandbox failed (unscored)
        self.steps: list[dict[str, float]] = []

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        task_id: Sequence[str],
        scenario: Sequence[str],
        log_metric: Callable[[str, float], None] | None = None,
        **_: Any,
    ) -> list[float | None]:
        """One reward per completion, in order; None for an episode the harness failed.

        TRL counts a None as unscorable: no advantage, outside the group's baseline. So a
        sandbox that could not start (after its retries) never costs the program reward.
        """
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        episodes = self.run(texts, list(task_id), list(scenario))
        rewards = [episode_reward(e, self.settings.reward) for e in episodes]
        scored = [r for r in rewards if r is not None]
        ran = sum(1 for e in episodes if e.code_found and e.exit_code == 0)
        self.episodes += len(episodes)
        self.ran += ran
        self.harness_failures += len(rewards) - len(scored)
        figures = {
            "episodes/run": float(self.episodes),
            "episodes/ran_share": ran / len(episodes),
            "episodes/reward_mean": statistics.fmean(scored) if scored else 0.0,
            "episodes/reward_spread": statistics.pstdev(scored) if scored else 0.0,
            "episodes/freed_share": statistics.fmean(e.freed_share for e in episodes),
            "episodes/harness_failures": float(self.harness_failures),
        }
        self.steps.append(figures)
        if log_metric is not None:
            for name, value in figures.items():
                log_metric(name, value)
        return rewards

    def run(self, texts: list[str], task_ids: list[str], scenarios: list[str]) -> list[Episode]:
        """Run the episodes (one group each, so they spread over the workers), in input order."""
        from agir_retrain.tasks.evaluation.episodes import EpisodeGroup, run_groups

        groups = [
            EpisodeGroup(
                task_id=task,
                scenario=self.scenarios[name],
                completions=(
                    Completion(task_id=task, model=MODEL_LABEL, sample=index, completion=text),
                ),
            )
            for index, (text, task, name) in enumerate(zip(texts, task_ids, scenarios, strict=True))
        ]
        done = run_groups(groups, self.settings, use_ray=self.use_ray, workers=self.workers)
        by_sample = {e.sample: e for e in done}
        return [by_sample[index] for index in range(len(texts))]


def make_reward(config: TrainConfig, rows: list[dict[str, Any]]) -> EpisodeReward:
    """The reward over the scenarios the rows name (each loaded once, now)."""
    from agir_retrain.tasks.evaluation.episodes import resolve_scenarios

    section = config.section("grpo")
    scenarios = resolve_scenarios(row["scenario"] for row in rows)
    return EpisodeReward(
        scenarios, section.environment, workers=section.workers, use_ray=section.ray
    )


class Grpo(TrlObjective):
    """GRPO on code prompts (``sft/train.jsonl``, or a tasks file), rewarded in the sandbox."""

    name = "grpo"
    summary = "the code prompts, rewarded by running each sampled program in the environment"
    settings = GrpoSettings
    splits = (Split(train=COMPLETION_TRAIN),)
    reads_eval = False  # judged by the evaluation flow, not by an eval loss
    columns = ("prompt", "task_id", "scenario")
    curves = (
        Curve(file="reward.png", train_key="reward", eval_key="eval_reward", title="GRPO reward"),
        Curve(
            file="ran_share.png",
            train_key="episodes/ran_share",
            eval_key="eval_episodes/ran_share",
            title="share of programs that ran",
        ),
    )

    def trl_classes(self) -> tuple[type, type]:
        """TRL's GRPOConfig and GRPOTrainer."""
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer

    def file_settings(self, config: TrainConfig) -> tuple[SettingFile, ...]:
        """The ``grpo.scenarios`` entries that are not built-in profiles (pure)."""
        from agir_retrain.tasks.environment.profiles import PROFILES

        return tuple(
            SettingFile(key=SCENARIOS_KEY, path=name, index=index, name=_shipped(name, index))
            for index, name in enumerate(self.section(config).scenarios)
            if name not in PROFILES
        )

    def data_files(self, config: TrainConfig) -> DataFiles:
        """The prompts' file (``sft/train.jsonl``, or a tasks file) and the scenario files it uses.

        With completion rows, the scenario files are the entries of ``grpo.scenarios``
        that are not built-in profiles; with a tasks file, those its rows name (no setting
        names them). An entry that is neither a profile nor a file is refused here.
        """
        return self._read(config, prompts=False)[0]

    def load_data(self, config: TrainConfig) -> TrainingData:
        """Code prompts, each bound to a scenario: from completion rows or a tasks file.

        A ``.jsonl`` whose rows carry ``task_id`` and ``scenario`` is read as an evaluation
        tasks file; otherwise the distinct code prompts of the completion rows are dealt the
        configured scenarios round-robin. There are no eval rows.
        """
        files, tasks = self._read(config, prompts=True)
        rows = [
            {"prompt": [dict(m) for m in t.prompt], "task_id": t.task_id, "scenario": t.scenario}
            for t in tasks
        ]
        return TrainingData(files=files, train=rows, eval=[])

    def _read(self, config: TrainConfig, *, prompts: bool) -> tuple[DataFiles, list[EvalTask]]:
        """The files (and with ``prompts``, the tasks) from one read of the prompts' file."""
        from agir_retrain.tasks.evaluation.eval_tasks import (
            bind_scenarios,
            is_task_row,
            parse_tasks,
        )

        train = locate_split(config.dataset, self.splits[0], reads_eval=False).train
        lines = list(read_jsonl(train))
        tasks: list[EvalTask] = []
        if lines and is_task_row(lines[0][1]):
            tasks = parse_tasks(train, lines)
            extra = [
                SettingFile(
                    key=None, path=name, name=_shipped(name), fix=NO_SETTING_FIX.format(path=name)
                )
                for name in sorted({task.scenario for task in tasks})
            ]
        else:
            extra = list(self.file_settings(config))
            if prompts:
                found = code_prompts(check_completion_rows(train, lines))
                if not found:
                    raise DatasetError(f"{train}: no code prompt to sample programs for")
                tasks = bind_scenarios(found, self.section(config).scenarios, "prompt")
        checked = tuple(entry for entry in extra if _is_scenario_file(entry, train))
        return DataFiles(train=train, eval=None, extra=checked), tasks

    def max_length(self, config: TrainConfig) -> int:
        """Prompt tokens (the empty stand-in completion counts 8)."""
        return self.section(config).max_prompt_length + 8

    def reference(self, config: TrainConfig) -> str:
        """The KL reference: the base with the adapter disabled, or none when beta is 0."""
        return "adapter" if self.section(config).beta > 0 else "none"

    def own_arguments(
        self, config: TrainConfig, section: Any, train_rows: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """Whole groups per batch, the sampling, the KL weight; task and scenario kept for the reward.

        One optimizer step samples ``batch_size * gradient_accumulation`` prompts (per
        process), each ``num_generations`` times.
        """
        completions = section.batch_size * section.num_generations
        return {
            # TRL's batch counts completions: a device batch holds whole groups.
            "per_device_train_batch_size": completions,
            "per_device_eval_batch_size": completions,
            "num_generations": section.num_generations,
            "temperature": section.temperature,
            "beta": section.beta,
            "max_completion_length": section.max_completion_length,
            "remove_unused_columns": False,  # task_id and scenario reach the reward
            "log_completions": False,
        }

    def trainer_inputs(
        self, config: TrainConfig, *, base: str, train_rows: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """The execution reward over the rows' scenarios."""
        return {"reward_funcs": [make_reward(config, list(train_rows))]}

    def check_backend(self, config: TrainConfig, backend: str) -> None:
        """Its episodes cannot use the docker sandbox inside a docker job (no engine there)."""
        environment = self.section(config).environment
        if backend == "docker" and environment.backend != "bwrap":
            raise ConfigError(
                f"grpo.environment.backend={environment.backend!r} cannot run inside a "
                "docker job (no Docker engine there): use grpo.environment.backend=bwrap, or "
                "submit.backend=local"
            )

    def nested_sandbox(self, config: TrainConfig) -> bool:
        """Its episodes run in bwrap jails inside the job."""
        return True


def _shipped(name: str, index: int | None = None) -> str:
    """A scenario file's name once shipped: ``scenarios/<index>-<file name>``."""
    base = posixpath.basename(name.rstrip("/")) or "scenario.json"
    prefix = f"{index}-" if index is not None else ""
    return f"{SCENARIO_FOLDER}/{prefix}{base}"


def _is_scenario_file(entry: SettingFile, train: str) -> bool:
    """Whether a named scenario is a file to ship (not a profile); refuse one that is neither."""
    from agir_retrain.tasks.environment.profiles import PROFILES

    if entry.path in PROFILES:
        return False
    if not (is_url(entry.path) or Path(local_path(entry.path)).is_file()):
        where = entry.setting if entry.key else f"{train}: scenario"
        raise ConfigError(
            f"{where}={entry.path!r}: neither a built-in profile ({', '.join(sorted(PROFILES))}) "
            "nor a scenario file"
        )
    return True


OBJECTIVE = Grpo()
