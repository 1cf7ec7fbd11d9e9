"""Settings of the training program: LoRA, the schedule every objective shares, ``TrainConfig``.

An objective's own section (``DpoSettings``, ...) lives in its module beside what it does
(``tasks/training/<name>.py``); ``TrainConfig`` finds them through the registry
(``tasks/objectives.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    PositiveInt,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.objectives import ORIGINAL
from agir_retrain.tasks.settings.base import Section, prefixed, problem, raise_problems
from agir_retrain.tasks.settings.generations import GenerationsSettings, Lineage
from agir_retrain.tasks.settings.submit import LaunchSettings, SubmitSettings
from agir_retrain.tasks.settings.tracking import TrackingSettings


class LoraSettings(Section):
    """The LoRA adapter (peft)."""

    r: PositiveInt = Field(16, description="LoRA rank.")
    alpha: PositiveInt = Field(32, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt; None finds every linear (or 4-bit linear) layer of "
        "the model except its output head.",
    )


class ScheduleSettings(Section):
    """The optimisation schedule every objective shares (TRL's TrainingArguments)."""

    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate (LoRA parameters).")
    epochs: float = Field(
        1.0, gt=0, description="Passes over the training rows (ignored when max_steps is set)."
    )
    max_steps: PositiveInt | None = Field(
        None, description="Optimizer steps; None trains for `epochs`."
    )
    batch_size: PositiveInt = Field(1, description="Rows per device per step.")
    gradient_accumulation: PositiveInt = Field(
        8, description="Steps accumulated per optimizer update."
    )
    max_length: PositiveInt = Field(
        2048,
        description="Tokens per row (prompt + completion); over-long prompts are shortened, rows "
        "that still do not fit are dropped and counted.",
    )
    gradient_checkpointing: bool = Field(True, description="Trade compute for activation memory.")
    seed: int = Field(42, description="Seed of initialisation, shuffling, sampling and dropout.")
    logging_steps: PositiveInt = Field(1, description="Log metrics every this many steps.")
    eval_steps: PositiveInt | None = Field(
        None, description="Evaluate every this many steps; None evaluates at the end only."
    )
    save_steps: PositiveInt = Field(50, description="Write a checkpoint every this many steps.")
    save_total_limit: PositiveInt = Field(2, description="Checkpoints kept (the oldest go first).")


class TrainConfig(Section):
    """Settings of the training program (`python -m agir_retrain.tasks.training --config FILE`).

    Each registered objective (``tasks/objectives.py``: the built-in ones, or a plugin's)
    has a section named after it, validated by the objective's own settings model;
    ``objective`` chooses which one trains.
    """

    # Extra keys are the objectives' sections, each validated in _objective_sections;
    # any other unknown key is refused there, as everywhere else.
    model_config = ConfigDict(frozen=True, extra="allow")

    dataset: str = Field(
        "dataset",
        description="A folder the dataset flow wrote (each objective reads its own split of it), "
        "or one JSONL file; local or an fsspec URL.",
    )
    eval_dataset: str | None = Field(
        None, description="An eval JSONL file; None uses the one beside the training file, if any."
    )
    base_model: str = Field(
        "builtin:tiny", description="Base model: a local folder, a hub id, or builtin:tiny."
    )
    out: str = Field(
        "adapter", description="Output folder: adapter, tokenizer, metrics, plots, model card."
    )
    quantize: bool = Field(
        True,
        description="Load the base in 4-bit NF4 with double quantization (bitsandbytes); "
        "False trains plain LoRA on a full-precision base.",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Dtype of the base's weights and of compute: auto = bfloat16 on GPUs that "
        "support it, float32 elsewhere; bfloat16 on a CPU with avx512_bf16 trains about 2x "
        "faster than float32 (docs/benchmarks.md); float32 or bfloat16 forces one. With "
        "quantize, the 4-bit layers compute in it.",
    )
    resume: bool = Field(
        False, description="Resume from the last checkpoint in `out`, if there is one."
    )
    merge: bool = Field(
        False,
        description="Also write the adapter merged into a full-precision copy of the base "
        "(out/merged); never merged into 4-bit weights.",
    )
    trust_remote_code: bool = Field(
        False, description="Allow a model's own code from its repository to run; off unless asked."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA.")
    objective: str = Field(
        ORIGINAL, description="What the adapter learns from: one of the registered objectives."
    )
    objective_plugins: list[str] = Field(
        default_factory=list,
        description="Objectives defined outside agir-retrain, as module:attribute import paths "
        "(attribute OBJECTIVE when left out), registered before the sections are read; the "
        "module must be importable wherever these settings are read (the job too).",
    )
    max_steps: PositiveInt | None = Field(
        None,
        description="Optimizer steps of the chosen objective; None keeps its section's own "
        "max_steps.",
    )
    launch: LaunchSettings = Field(default_factory=LaunchSettings, description="Launch.")
    tracking: TrackingSettings = Field(
        default_factory=TrackingSettings,
        description="Experiment trackers the run reports to (none by default).",
    )
    submit: SubmitSettings = Field(
        default_factory=SubmitSettings,
        description="Where the job runs (the program itself ignores it).",
    )
    generations: GenerationsSettings = Field(
        default_factory=GenerationsSettings,
        description="Several datasets, one per generation, and the window trained on.",
    )
    lineage: Lineage | None = Field(
        None,
        description="Set when a window of generations is prepared for submission (not by hand): "
        "what the adapter learns from; written beside it as lineage.json.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _objective_sections(
        cls, data: Any, handler: ModelWrapValidatorHandler[TrainConfig]
    ) -> TrainConfig:
        """Validate each registered objective's section with its model; refuse other extras."""
        if not isinstance(data, dict):
            return handler(data)
        from agir_retrain.tasks.objectives import load_plugins, objectives

        given = dict(data)
        problems = []
        for old in MOVED_TO_SECTIONS:
            if old in given:
                problems.append(problem((old,), "moved_setting", _moved(old), given.pop(old)))
        plugins = given.get("objective_plugins")
        if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
            try:
                load_plugins(plugins)
            except ConfigError as error:
                problems.append(problem(("objective_plugins",), "plugin", str(error), plugins))
        registry = objectives()
        sections: dict[str, Any] = {}
        for name, objective in registry.items():
            raw = given.pop(name, None)
            try:
                sections[name] = objective.settings.model_validate({} if raw is None else raw)
            except ValidationError as error:
                problems.extend(prefixed(error, name))
        chosen = given.get("objective", ORIGINAL)
        if isinstance(chosen, str) and chosen not in registry:
            message = f"no objective {chosen!r}: choose one of {', '.join(registry)}"
            problems.append(problem(("objective",), "unknown_objective", message, chosen))
        for key in [key for key in given if key not in cls.model_fields]:
            problems.append({"type": "extra_forbidden", "loc": (key,), "input": given.pop(key)})
        config = None
        try:
            config = handler(given | sections)
        except ValidationError as error:
            problems.extend(prefixed(error))
        raise_problems(cls.__name__, problems)
        return config  # type: ignore[return-value]  # set: raise_problems raised otherwise

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The schema (Prefect's UI, deployments) lists each registered objective's section.

        Other keys stay allowed there: a plugin's section is known only where its module is
        imported, and the model itself refuses what no objective owns.
        """
        from agir_retrain.tasks.objectives import objectives

        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        properties = target.setdefault("properties", {})
        for name, objective in objectives().items():
            section = handler(objective.settings.__pydantic_core_schema__)
            properties[name] = {**section, "description": objective.summary}
        return schema

    @classmethod
    def prepare_settings(cls, lookup: Callable[[str], Any]) -> None:
        """Register the objectives ``objective_plugins`` names (any layer), before keys are read."""
        from agir_retrain.tasks.objectives import load_plugins

        plugins = lookup("objective_plugins")
        if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
            try:
                load_plugins(plugins)
            except ConfigError as error:
                raise ConfigError(f"objective_plugins: {error}") from error

    @classmethod
    def setting_fields(cls) -> dict[str, tuple[Any, str]]:
        """The fields, with every registered objective's section right after ``objective``."""
        from agir_retrain.tasks.objectives import objectives

        fields: dict[str, tuple[Any, str]] = {}
        for name, (annotation, description) in super().setting_fields().items():
            if name != "objective":
                fields[name] = (annotation, description)
                continue
            registry = objectives()
            choices = "; ".join(f"{n}: {o.summary}" for n, o in registry.items())
            fields[name] = (annotation, f"What the adapter learns from. {choices}.")
            for objective_name, objective in registry.items():
                fields[objective_name] = (objective.settings, objective_name.upper() + ".")
        return fields

    def section(self, name: str | None = None) -> Any:
        """An objective's settings (the chosen one's by default), ``max_steps`` applied to it.

        An objective registered after these settings were made has its defaults.
        """
        name = name or self.objective
        extra = self.__pydantic_extra__ or {}
        found = extra.get(name)
        if found is None:
            from agir_retrain.tasks.objectives import objective

            found = objective(name).settings()
        if name == self.objective and self.max_steps is not None:
            found = found.model_copy(update={"max_steps": self.max_steps})
        return found


# Top-level settings that moved into the objectives' sections: an old file says where.
MOVED_TO_SECTIONS = ("reference",)


def _moved(key: str) -> str:
    """Where a moved setting is now: each registered objective's section that has it."""
    from agir_retrain.tasks.objectives import objectives

    holders = [
        f"{name}.{key}" for name, o in objectives().items() if key in o.settings.model_fields
    ]
    return f"moved into the objective's section: set {' or '.join(holders)}"
