"""GRPO: what is GRPO's own. Code prompts bound to scenarios, the execution reward, the trainer.

Each step samples ``num_generations`` completions per prompt; each completion's program
runs in a fresh copy of its prompt's scenario (``run_episode``), and its reward is
``episode_reward`` (freed share minus the damage and did-not-run penalties of
``grpo.environment.reward``). The episodes of one step run in parallel: local processes,
or Ray tasks when ``grpo.ray`` is set. Besides TRL's own ``reward``/``reward_std``, every
step logs its episodes, their reward mean and spread, and the share of programs that ran.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agir_retrain.tasks.environment.contract import Completion, Episode, Scenario
from agir_retrain.tasks.environment.reward import RewardWeights, episode_reward
from agir_retrain.tasks.errors import ConfigError, DatasetError
from agir_retrain.tasks.io import is_url, local_path, read_bytes
from agir_retrain.tasks.settings.environment import EnvironmentSettings
from agir_retrain.tasks.settings.models import TrainConfig
from agir_retrain.tasks.training.arguments import trainer_arguments
from agir_retrain.tasks.training.completions import code_prompts, load_completion_rows, locate_split
from agir_retrain.tasks.training.data import DataFiles, SettingFile
from agir_retrain.tasks.training.outputs import Curve

log = logging.getLogger(__name__)

NAME = "grpo"
MODEL_LABEL = "policy"
SCENARIOS_KEY = "grpo.scenarios"
# Scenario files a tasks file's rows name: no setting names them, so none can be rewritten.
TASKS_SCENARIO = "tasks file scenario"
CURVES = (
    Curve(file="reward.png", train_key="reward", eval_key="eval_reward", title="GRPO reward"),
    Curve(
        file="ran_share.png",
        train_key="episodes/ran_share",
        eval_key="eval_episodes/ran_share",
        title="share of programs that ran",
    ),
)


def reference(config: TrainConfig) -> str:
    """The KL reference: the base with the adapter disabled, or none when beta is 0."""
    return "adapter" if config.grpo.beta > 0 else "none"


def max_length(config: TrainConfig) -> int:
    """Prompt tokens (the empty stand-in completion counts 8)."""
    return config.grpo.max_prompt_length + 8


def load_data(config: TrainConfig) -> tuple[DataFiles, list[dict[str, Any]], list[dict[str, Any]]]:
    """Code prompts, each bound to a scenario: from ``sft/train.jsonl`` or a tasks file.

    A ``.jsonl`` whose rows carry ``task_id`` and ``scenario`` is read as an evaluation
    tasks file; otherwise the distinct code prompts of the SFT rows are dealt the
    configured scenarios round-robin. GRPO is judged by the evaluation flow, not by an
    eval loss, so there are no eval rows.
    """
    from agir_retrain.tasks.evaluation.tasks import bind_scenarios, read_tasks

    files = data_files(config)
    if _is_tasks_file(files.train):
        tasks = read_tasks(files.train)
    else:
        prompts = code_prompts(load_completion_rows(files.train))
        if not prompts:
            raise DatasetError(f"{files.train}: no code prompt to sample programs for")
        tasks = bind_scenarios(prompts, config.grpo.scenarios, "prompt")
    rows = [
        {"prompt": [dict(m) for m in t.prompt], "task_id": t.task_id, "scenario": t.scenario}
        for t in tasks
    ]
    return files, rows, []


def data_files(config: TrainConfig) -> DataFiles:
    """The prompts' file (``sft/train.jsonl``, or a tasks file) and the scenario files it uses.

    With the SFT rows, the scenario files are the entries of ``grpo.scenarios`` that are
    not built-in profiles; with a tasks file, those its rows name (key ``TASKS_SCENARIO``:
    no setting names them). An entry that is neither a profile nor a file is refused here.
    """
    from agir_retrain.tasks.environment.profiles import PROFILES

    train = locate_split(config.dataset, "sft").train
    if _is_tasks_file(train):
        from agir_retrain.tasks.evaluation.tasks import read_tasks

        named = sorted({task.scenario for task in read_tasks(train)})
        entries = [(TASKS_SCENARIO, None, name) for name in named]
    else:
        entries = [(SCENARIOS_KEY, i, name) for i, name in enumerate(config.grpo.scenarios)]
    extra = []
    for key, index, name in entries:
        if name in PROFILES:
            continue
        if not (is_url(name) or Path(local_path(name)).is_file()):
            where = f"{key}[{index}]" if index is not None else f"{train}: scenario"
            raise ConfigError(
                f"{where}={name!r}: neither a built-in profile ({', '.join(sorted(PROFILES))}) "
                "nor a scenario file"
            )
        extra.append(SettingFile(key=key, path=name, index=index))
    return DataFiles(train=train, eval=None, extra=tuple(extra))


def _is_tasks_file(path: str) -> bool:
    from agir_retrain.tasks.training.data import read_jsonl

    first = next(iter(read_jsonl(path)), None)
    return first is not None and isinstance(first[1], dict) and "scenario" in first[1]


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
        self.weights = RewardWeights(
            damage_penalty=settings.reward.damage_penalty,
            not_ran_penalty=settings.reward.not_ran_penalty,
        )
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
        rewards = [episode_reward(e, self.weights) for e in episodes]
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
        from agir_retrain.tasks.evaluation.episodes import EpisodeGroup, run_groups_locally

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
        if self.use_ray:
            from agir_retrain.tasks.ray_pool import run_episode_groups_on_ray

            done = run_episode_groups_on_ray(groups, self.settings)
        else:
            done = run_groups_locally(groups, self.settings, self.workers)
        by_sample = {e.sample: e for e in done}
        return [by_sample[index] for index in range(len(texts))]


def make_reward(config: TrainConfig, rows: list[dict[str, Any]]) -> EpisodeReward:
    """The reward over the scenarios the rows name (each loaded once, now)."""
    grpo = config.grpo
    scenarios = {name: _load_scenario(name) for name in sorted({r["scenario"] for r in rows})}
    return EpisodeReward(scenarios, grpo.environment, workers=grpo.workers, use_ray=grpo.ray)


def _load_scenario(name: str) -> Scenario:
    """A built-in profile or a scenario file, local or at a URL (a copy in shared storage)."""
    from agir_retrain.tasks.environment.scenario import ScenarioError, load_scenario, parse_scenario

    if not is_url(name):
        return load_scenario(name)
    try:
        data = json.loads(read_bytes(name))
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"{name}: not readable as JSON: {exc}") from exc
    return parse_scenario(data, name)


def grpo_config(
    config: TrainConfig, *, on_gpu: bool, bf16: bool, gradient_checkpointing: bool
) -> dict[str, Any]:
    """The keyword arguments of TRL's GRPOConfig for these settings (pure: no torch, no TRL).

    One optimizer step samples ``batch_size * gradient_accumulation`` prompts (per
    process), each ``num_generations`` times.
    """
    grpo = config.grpo
    return trainer_arguments(
        config.out,
        grpo,
        on_gpu=on_gpu,
        bf16=bf16,
        has_eval=False,
        gradient_checkpointing=gradient_checkpointing,
        tracking=config.tracking,
    ) | {
        # TRL's batch counts completions: a device batch holds whole groups.
        "per_device_train_batch_size": grpo.batch_size * grpo.num_generations,
        "per_device_eval_batch_size": grpo.batch_size * grpo.num_generations,
        "num_generations": grpo.num_generations,
        "temperature": grpo.temperature,
        "beta": grpo.beta,
        "max_completion_length": grpo.max_completion_length,
        "remove_unused_columns": False,  # task_id and scenario reach the reward
        "log_completions": False,
    }


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """A datasets.Dataset of the prompts and what the reward needs to run them."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": r["prompt"], "task_id": r["task_id"], "scenario": r["scenario"]} for r in rows]
    )


def build_trainer(
    config: TrainConfig,
    *,
    base: str,
    model: Any,
    tokenizer: Any,
    peft_config: Any,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    gradient_checkpointing: bool,
) -> Any:
    """TRL's GRPOTrainer over the policy, the prompts and the execution reward."""
    from trl import GRPOConfig, GRPOTrainer

    from agir_retrain.tasks.training.model import precision_flags

    args = GRPOConfig(
        **grpo_config(
            config,
            **precision_flags(),
            gradient_checkpointing=gradient_checkpointing,
        )
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=[make_reward(config, train_rows)],
        args=args,
        train_dataset=to_dataset(train_rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
