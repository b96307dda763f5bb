from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)

from app.schemas.common import StrictInput, Text


def _exact_decimal(value: object) -> object:
    """A JSON number arrives as a float; its shortest spelling (repr) is what the client wrote,
    so 12.505 stays 12.505 (three places: refused) instead of becoming 12.50499999... Numbers a
    double cannot tell apart (1.0000000000000001 is the double 1.0) were lost by the JSON parser
    before this runs."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


def _cents(value: Decimal) -> Decimal:
    # One form for every price, the one PostgreSQL's numeric(12, 2) stores: -0.0 is 0.00, so
    # the answer to a write is what a later read returns.
    return (abs(value) if value == 0 else value).quantize(Decimal("0.01"))


Price = Annotated[
    Decimal,
    BeforeValidator(_exact_decimal),
    Field(ge=0, le=Decimal("9999999999.99"), max_digits=12, decimal_places=2),
    # After the Field's checks, so that a third decimal place is refused, not rounded away.
    AfterValidator(_cents),
    # A JSON number for clients; two decimals fit a double exactly at this magnitude.
    PlainSerializer(float, return_type=float, when_used="json"),
]
ItemName = Annotated[Text, Field(min_length=1, max_length=200)]
ItemDescription = Annotated[Text, Field(max_length=2000)]


class ItemCreate(StrictInput):
    name: ItemName
    description: ItemDescription = ""
    price: Price


def _offer_no_null(schema: dict[str, Any]) -> None:
    """`None` is only the "not sent" default and an explicit null is refused (below), so the
    published schema does not offer null either."""
    for field_schema in schema.get("properties", {}).values():
        variants = [v for v in field_schema.pop("anyOf", []) if v.get("type") != "null"]
        field_schema.pop("default", None)
        if len(variants) == 1:
            field_schema.update(variants[0])
        elif variants:
            field_schema["anyOf"] = variants


class ItemUpdate(StrictInput):
    model_config = ConfigDict(json_schema_extra=_offer_no_null)

    name: ItemName | None = None
    description: ItemDescription | None = None
    price: Price | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _no_explicit_null(cls, value: object) -> object:
        # Omitted means "leave as is"; an explicit null would blank a NOT NULL column. Defaults
        # are not validated, so this runs only for values the client actually sent.
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class ItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    price: Price
    owner_id: int
    version: int
    created_at: datetime
    updated_at: datetime
