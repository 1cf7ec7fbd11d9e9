"""What every settings model shares: frozen, unknown keys rejected, sections linked by one helper."""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict

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


def where_unset(section: SectionT, **values: object) -> SectionT:
    """A copy of ``section`` taking ``values`` for the fields it was not given."""
    return section.model_copy(
        update={key: value for key, value in values.items() if key not in section.model_fields_set}
    )
