from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

# Bounded on purpose: one request can never ask for an unbounded number of rows.
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

PageLimit = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE, description="Rows per page (1-100).")]
PageCursor = Annotated[
    int | None,
    Field(ge=0, le=2**63 - 1, description="Return rows with an id greater than this cursor."),
]


class StrictInput(BaseModel):
    # Unknown fields are a client mistake worth naming, not something to drop silently.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Page(BaseModel, Generic[T]):
    """Keyset pagination: stable under concurrent inserts and O(limit) at any depth."""

    data: list[T]
    next_cursor: int | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )
