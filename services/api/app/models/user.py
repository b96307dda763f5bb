from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Identity, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, TimestampMixin

if TYPE_CHECKING:
    from app.models.item import Item


class User(TimestampMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    # SHA-256 of the API token: tokens are 256 random bits, so a slow KDF would add nothing.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)

    items: Mapped[list["Item"]] = relationship(back_populates="owner", passive_deletes=True)
