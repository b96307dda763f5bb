"""Every router joined in one place."""

from fastapi import APIRouter

from app.routes import health, items, users

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(users.router)
api_router.include_router(items.router)
