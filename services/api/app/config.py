"""Every setting of the API, read once from environment variables (and `.env` in development)."""

import socket
from functools import lru_cache
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, computed_field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL

# Values that ship in .env.example; a real deployment must replace them.
PLACEHOLDER_SECRETS = frozenset({"", "changethis", "change-me", "password", "postgres", "secret"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")

    app_env: Literal["development", "test", "production"] = "development"
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    # Names this replica in logs and metrics; the hostname is unique per container.
    replica_name: str = Field(default_factory=socket.gethostname)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    docs_enabled: bool = True
    # Per-request HTTP metrics (http_requests_total, http_request_duration_seconds). Off only to
    # measure what they cost (make bench); /metrics keeps serving everything else either way.
    metrics_enabled: bool = True
    # Uvicorn waits this long for in-flight requests after SIGTERM before closing pools.
    shutdown_grace_seconds: Annotated[int, Field(gt=0, le=120)] = 20

    database_url: SecretStr | None = None
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_user: str = "app"
    postgres_password: SecretStr = SecretStr("")
    postgres_db: str = "app"
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    db_max_overflow: Annotated[int, Field(ge=0, le=200)] = 5
    # Fail fast: a request waiting longer than this for a connection answers 503.
    db_pool_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    db_connect_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    db_statement_timeout_ms: Annotated[int, Field(ge=0)] = 5000

    redis_url: SecretStr | None = None
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_password: SecretStr | None = None
    redis_db: int = 0
    # Short on purpose: the cache must never hold a request up for longer than this.
    redis_socket_timeout_seconds: Annotated[float, Field(gt=0, le=10)] = 0.1
    cache_ttl_seconds: Annotated[int, Field(ge=1)] = 60
    # After a Redis error the cache is bypassed for this long, so a dead Redis costs nothing.
    cache_retry_after_seconds: Annotated[float, Field(ge=0)] = 1.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return URL.create(
            "postgresql+asyncpg",
            username=self.postgres_user,
            password=self.postgres_password.get_secret_value(),
            host=self.postgres_host,
            port=self.postgres_port,
            database=self.postgres_db,
        ).render_as_string(hide_password=False)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def redis_dsn(self) -> str:
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        auth = f":{self.redis_password.get_secret_value()}@" if self.redis_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Self:
        if self.app_env != "production":
            return self
        if self.database_url is None and (
            self.postgres_password.get_secret_value() in PLACEHOLDER_SECRETS
        ):
            raise ValueError("POSTGRES_PASSWORD is a placeholder; set a real secret in production")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
