from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

IN_PROGRESS = "in_progress"
DONE = "done"


class IdempotencyKey(Base):
    """One `Idempotency-Key` a caller sent, and the answer its request got (app.idempotency)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("scope", "key"),
        # The cleanup deletes the oldest rows in bounded batches: an index scan, not a table scan.
        Index("ix_idempotency_keys_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # Whose key: the SHA-256 of the caller's token, or "anonymous <route>" where none is needed.
    scope: Mapped[str] = mapped_column(String(100), nullable=False)
    # The sf-string's content (at most 255 characters once unescaped; the header is checked).
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    # SHA-256 of the method, the path and the body: the same key with another request is a 422.
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, server_default=IN_PROGRESS)
    status: Mapped[int | None] = mapped_column(SmallInteger)
    headers: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
