"""What every settings model shares: frozen, unknown keys rejected, sections linked by one helper."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict

SectionT = TypeVar("SectionT", bound=BaseModel)


class Section(BaseModel):
    """A settings model: frozen, and a misspelt key fails loudly instead of being dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def where_unset(section: SectionT, **values: object) -> SectionT:
    """A copy of ``section`` taking ``values`` for the fields it was not given."""
    return section.model_copy(
        update={key: value for key, value in values.items() if key not in section.model_fields_set}
    )
