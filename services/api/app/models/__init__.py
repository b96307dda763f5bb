"""ORM models; Alembic's autogenerate reads `Base.metadata` from here."""

from app.models.base import Base
from app.models.idempotency import IdempotencyKey
from app.models.item import Item
from app.models.user import User

__all__ = ["Base", "IdempotencyKey", "Item", "User"]
