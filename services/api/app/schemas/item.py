from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator

from app.schemas.common import StrictInput

Price = Annotated[
    Decimal,
    Field(ge=0, le=Decimal("9999999999.99"), max_digits=12, decimal_places=2),
    # A JSON number for clients; two decimals fit a double exactly at this magnitude.
    PlainSerializer(float, return_type=float, when_used="json"),
]
ItemName = Annotated[str, Field(min_length=1, max_length=200)]
ItemDescription = Annotated[str, Field(max_length=2000)]


class ItemCreate(StrictInput):
    name: ItemName
    description: ItemDescription = ""
    price: Price


class ItemUpdate(StrictInput):
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
