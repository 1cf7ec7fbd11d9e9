"""What TRL objectives share: ``TrlObjective``, the ``Objective`` protocol's common part.

A subclass says what is its own: its settings section, its split, its columns, its TRL
config and trainer classes, what it adds to the TRL config (``own_arguments``) and to
the trainer (``trainer_inputs``), how it reads its rows (``load_data``). Everything else,
the mapping of the shared schedule to TrainingArguments, the datasets the trainer reads
and building the trainer itself, is written once, here.

    class Mine(TrlObjective):
        name, summary, settings, splits = "mine", "...", MineSettings, (Split(train="mine/train.jsonl"),)
        columns = ("prompt", "completion")
        def trl_classes(self): from trl import SFTConfig, SFTTrainer; return SFTConfig, SFTTrainer
        def load_data(self, config): ...

    register(Mine())  # agir_retrain.tasks.objectives
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from agir_retrain.tasks.objectives import (
    Curve,
    DataFiles,
    Headline,
    SettingFile,
    Split,
    TrainingData,
)
from agir_retrain.tasks.settings.train import ScheduleSettings
from agir_retrain.tasks.training.arguments import trainer_arguments
from agir_retrain.tasks.training.files import locate_split

if TYPE_CHECKING:
    from agir_retrain.tasks.settings.train import TrainConfig


class TrlObjective:
    """An objective trained by a TRL trainer on rows of its own split (see the module)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    settings: ClassVar[type[ScheduleSettings]]
    splits: ClassVar[tuple[Split, ...]]
    columns: ClassVar[tuple[str, ...]]  # what the trainer reads of each row
    curves: ClassVar[tuple[Curve, ...]] = ()
    headlines: ClassVar[tuple[Headline, ...]] = ()
    reads_eval: ClassVar[bool] = True
    flat_layout: ClassVar[bool] = False  # also finds train.jsonl at the dataset's top

    def __repr__(self) -> str:
        return f"<objective {self.name} ({type(self).__module__}.{type(self).__qualname__})>"

    def section(self, config: TrainConfig) -> Any:
        """This objective's settings in ``config`` (with ``max_steps`` applied when chosen)."""
        return config.section(self.name)

    # -- data ------------------------------------------------------------------------------

    def data_files(self, config: TrainConfig) -> DataFiles:
        """Its split's files in ``config.dataset`` (and ``eval_dataset``), and its other files."""
        files = locate_split(
            config.dataset,
            self.splits[0],
            config.eval_dataset,
            flat=self.flat_layout,
            reads_eval=self.reads_eval,
        )
        return DataFiles(train=files.train, eval=files.eval, extra=self.extra_files(config))

    def file_settings(self, config: TrainConfig) -> tuple[SettingFile, ...]:
        """The settings of its section naming files it reads (none by default)."""
        return ()

    def extra_files(self, config: TrainConfig) -> tuple[SettingFile, ...]:
        """The files its settings name, checked to exist (``file_settings`` by default)."""
        return self.file_settings(config)

    def load_data(self, config: TrainConfig) -> TrainingData:
        """Read and check its rows; subclasses say how (``read_split``, mostly)."""
        raise NotImplementedError

    def read_split(self, config: TrainConfig, read: Callable[..., list[Any]]) -> TrainingData:
        """Its files' rows, each file read and checked by ``read(path, allow_empty=...)``."""
        files = self.data_files(config)
        train = read(files.train)
        evaluation = read(files.eval, allow_empty=True) if files.eval else []
        return TrainingData(files=files, train=train, eval=evaluation)

    def max_length(self, config: TrainConfig) -> int:
        """Tokens each row is fitted to: its section's ``max_length``."""
        return self.section(config).max_length

    def reference(self, config: TrainConfig) -> str:
        """What the policy is compared with: its section's ``reference``, else ``none``."""
        return getattr(self.section(config), "reference", "none")

    # -- the TRL config and trainer --------------------------------------------------------

    def trl_classes(self) -> tuple[type, type]:
        """TRL's config and trainer classes for this objective (imported only when training)."""
        raise NotImplementedError

    def own_arguments(
        self, config: TrainConfig, section: Any, train_rows: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """The TRL config fields the objective sets on top of the shared TrainingArguments."""
        return {}

    def trl_config(
        self,
        config: TrainConfig,
        *,
        on_gpu: bool,
        bf16: bool,
        gradient_checkpointing: bool,
        train_rows: Sequence[dict[str, Any]] = (),
        has_eval: bool = False,
    ) -> dict[str, Any]:
        """The keyword arguments of its TRL config for these settings (pure: no torch, no TRL)."""
        section = self.section(config)
        shared = trainer_arguments(
            config.out,
            section,
            on_gpu=on_gpu,
            bf16=bf16,
            has_eval=has_eval and self.reads_eval,
            gradient_checkpointing=gradient_checkpointing,
            tracking=config.tracking,
        )
        return shared | self.own_arguments(config, section, train_rows)

    def to_dataset(self, rows: Sequence[dict[str, Any]]) -> Any:
        """A datasets.Dataset of the columns its trainer reads (provenance and ids left out)."""
        from datasets import Dataset

        return Dataset.from_list([{key: row[key] for key in self.columns} for row in rows])

    def trainer_inputs(
        self, config: TrainConfig, *, base: str, train_rows: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """Keyword arguments its trainer takes besides the shared ones (a reference, a reward)."""
        return {}

    def build_trainer(
        self,
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
        """Its TRL trainer over the policy (LoRA on ``model``) and the fitted rows."""
        from agir_retrain.tasks.training.model import precision_flags

        config_class, trainer_class = self.trl_classes()
        args = config_class(
            **self.trl_config(
                config,
                **precision_flags(config.dtype),
                gradient_checkpointing=gradient_checkpointing,
                train_rows=train_rows,
                has_eval=bool(eval_rows),
            )
        )
        return trainer_class(
            model=model,
            args=args,
            train_dataset=self.to_dataset(train_rows),
            eval_dataset=self.to_dataset(eval_rows) if eval_rows and self.reads_eval else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            **self.trainer_inputs(config, base=base, train_rows=train_rows),
        )

    # -- where it runs ---------------------------------------------------------------------

    def check_backend(self, config: TrainConfig, backend: str) -> None:
        """Raise ``ConfigError`` if a job with these settings cannot run on ``backend``."""

    def nested_sandbox(self, config: TrainConfig) -> bool:
        """Whether its job runs sandboxed programs itself (none by default)."""
        return False
