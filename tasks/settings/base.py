"""What every settings model shares: frozen, unknown keys rejected, sections linked by one helper."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

SectionT = TypeVar("SectionT", bound=BaseModel)

# The dtype a base model is sampled in (garbling, evaluation): auto is bfloat16 on a GPU and
# float32 on the CPU (tasks/models/loading.py says why; figures in docs/benchmarks.md).
SamplingDtype = Literal["auto", "float32", "bfloat16"]
SAMPLING_DTYPE_HELP = (
    "Dtype the base model is sampled in: auto = bfloat16 on a GPU, float32 on the CPU, where "
    "float32 keeps every sample independent of its batch (bfloat16 samples about 2x faster "
    "there but its samples change with batch size, actor count and prefill sharing); "
    "float32 or bfloat16 forces one. Samples depend on it."
)


class Section(BaseModel):
    """A settings model: frozen, and a misspelt key fails loudly instead of being dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def setting_fields(cls) -> dict[str, tuple[Any, str]]:
        """Every setting of the model, in order: name -> (its type, its help text).

        The fields, and for a model with sections decided at run time (``TrainConfig``'s
        objectives) those too: the loader, ``config show`` and the command line read this.
        """
        return {
            name: (info.annotation, info.description or "")
            for name, info in cls.model_fields.items()
        }


def where_unset(section: SectionT, **values: object) -> SectionT:
    """A copy of ``section`` taking ``values`` for the fields it was not given."""
    return section.model_copy(
        update={key: value for key, value in values.items() if key not in section.model_fields_set}
    )


def problem(loc: tuple[str | int, ...], kind: str, message: str, value: Any) -> InitErrorDetails:
    """A validation problem of our own (``kind``: a short snake_case name), as pydantic reports one."""
    return {"type": PydanticCustomError(kind, message), "loc": loc, "input": value}


def prefixed(error: ValidationError, *prefix: str | int) -> list[InitErrorDetails]:
    """A nested model's problems, located under ``prefix``, ready to raise again."""
    found: list[InitErrorDetails] = []
    for item in error.errors():
        loc = (*prefix, *item["loc"])
        if item["type"] not in _CORE_ERRORS:  # a model's own kind: carried as its message
            found.append(problem(loc, item["type"], item["msg"], item.get("input")))
            continue
        details: InitErrorDetails = {"type": item["type"], "loc": loc, "input": item.get("input")}
        if "ctx" in item:
            details["ctx"] = item["ctx"]
        found.append(details)
    return found


def raise_problems(title: str, problems: Iterable[InitErrorDetails]) -> None:
    """Raise every problem at once as one ``ValidationError`` (nothing when there is none)."""
    problems = list(problems)
    if problems:
        raise ValidationError.from_exception_data(title, problems)


_CORE_ERRORS = frozenset(get_args(ErrorType))
