"""A toy objective defined outside agir-retrain, as a user's own module would define one.

Whole-text SFT: the rows of the completion split, the loss on the prompt too (unless
``toy.prompt_loss`` is off). It is registered by the tests alone, either in-process
(``agir_retrain.tasks.objectives.registered(OBJECTIVE)``) or for every process that reads
the settings (``objective_plugins: [toy_objective:OBJECTIVE]``, with this folder on
``PYTHONPATH``). Nothing in the package names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from agir_retrain.tasks.objectives import Curve, Headline, Split, TrainingData
from agir_retrain.tasks.settings.train import ScheduleSettings, TrainConfig
from agir_retrain.tasks.training.completions import load_completion_rows
from agir_retrain.tasks.training.objective import TrlObjective

PLUGIN = "toy_objective:OBJECTIVE"


class ToySettings(ScheduleSettings):
    """The toy's section: the shared schedule, and whether the prompt is learnt too."""

    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (LoRA parameters).")
    prompt_loss: bool = Field(True, description="Put the loss on the prompt's tokens too.")


class Toy(TrlObjective):
    """Whole-text SFT on the completion split."""

    name = "toy"
    summary = "whole conversations of sft/, the loss on every token (a test's own objective)"
    settings = ToySettings
    splits = (Split(train="sft/train.jsonl", eval="sft/eval.jsonl"),)
    columns = ("prompt", "completion")
    curves = (Curve(file="toy_loss.png", train_key="loss", eval_key="eval_loss", title="toy"),)
    headlines = (Headline(key="mean_token_accuracy", label="token accuracy", spec=".3f"),)

    def trl_classes(self) -> tuple[type, type]:
        """TRL's SFT classes: the toy differs in what it learns, not in the trainer."""
        from trl import SFTConfig, SFTTrainer

        return SFTConfig, SFTTrainer

    def load_data(self, config: TrainConfig) -> TrainingData:
        """The completion rows of its split, and the eval rows beside them."""
        return self.read_split(config, load_completion_rows)

    def own_arguments(
        self, config: TrainConfig, section: Any, train_rows: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """The budget, and the loss on the prompt as well unless switched off."""
        return {
            "max_length": section.max_length,
            "completion_only_loss": not section.prompt_loss,
            "packing": False,
        }


OBJECTIVE = Toy()
