from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

T = TypeVar("T")

# Bounded on purpose: one request can never ask for an unbounded number of rows.
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

PageLimit = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE, description="Rows per page (1-100).")]
PageCursor = Annotated[
    int | None,
    Field(ge=0, le=2**63 - 1, description="Return rows with an id greater than this cursor."),
]


def _no_nul(value: str) -> str:
    # PostgreSQL's text types cannot hold U+0000: refused here, the client gets a 422 naming the
    # field instead of the INSERT failing. (Lone surrogates never get this far: pydantic refuses
    # strings that are not valid Unicode.)
    if "\x00" in value:
        raise PydanticCustomError("string_nul", "String should not contain NUL (U+0000)")
    return value


# Every free-text input field: whatever Unicode the client sends is kept verbatim (RTL marks,
# emoji, quotes and SQL-looking text included), except the one character PostgreSQL refuses.
# The pattern only tells the OpenAPI document (and schema-driven clients) the same rule.
Text = Annotated[
    str, AfterValidator(_no_nul), Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})
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
