"""Every setting of the API, read once from environment variables (and `.env` in development).

The connection URLs are built from the secrets on demand, as `SecretStr`, by plain properties:
never fields, so `repr()`, `str()`, `model_dump()` and `model_dump_json()` cannot show a password.
"""

import socket
from functools import lru_cache
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL

# Values that ship in .env.example; a real deployment must replace them.
PLACEHOLDER_SECRETS = frozenset({"", "changethis", "change-me", "password", "postgres", "secret"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        # A validation error would otherwise print its input, the whole environment's worth of
        # settings (passwords included) for a model-level check, into the start-up crash log.
        hide_input_in_errors=True,
    )

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
    # After SIGTERM: the drain (app.__main__.DRAIN_SECONDS, 4 s), then in-flight requests for
    # the rest, before the pools close. At least 5, so the whole drain always fits: one cut
    # short of nginx's upstream keepalive_timeout closed idle connections under nginx's writes
    # (502s for POSTs when `make scale` took replicas away with a 5 s grace giving a 2.5 s drain).
    shutdown_grace_seconds: Annotated[int, Field(ge=5, le=120)] = 20
    # The drain's floor: refuse new connections at least this long after SIGTERM, even with
    # none left open. 0 (Compose, native) ends the drain once nginx has let go. Swarm needs it:
    # it takes a task out of the service's DNS 2 s before SIGTERM, while nginx keeps the last
    # answer for its resolver's valid=5s; a replica gone before nginx looks again leaves an
    # address with nothing behind it, and nginx waits out proxy_connect_timeout (504, then
    # 502). Refused, nginx moves on at once (docs/swarm.md).
    drain_min_seconds: Annotated[float, Field(ge=0, le=60)] = 0.0
    # Replicas the deployment runs (exported as api_replicas_expected, for the replica alerts).
    api_replicas: Annotated[int, Field(ge=1, le=64)] = 3
    # A request body not complete this long after its header gets a 408 (app.body_deadline);
    # nginx's own body timeout is per read, so a trickled body is only cut off here.
    request_body_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0

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
    # How long an Idempotency-Key's stored answer is replayed (app.idempotency); a day covers a
    # client's retries across a long outage. Every IDEMPOTENCY_CLEANUP_INTERVAL_SECONDS each
    # replica deletes expired keys in bounded batches.
    idempotency_key_ttl_seconds: Annotated[int, Field(ge=1)] = 86400
    idempotency_cleanup_interval_seconds: Annotated[float, Field(gt=0)] = 60.0

    # Read only to refuse them: this API runs one worker per process (see app.__main__), and
    # prometheus_client's multiprocess mode, which these ask for, is not supported.
    web_concurrency: int | None = None
    prometheus_multiproc_dir: str | None = None

    @property
    def sqlalchemy_url(self) -> SecretStr:
        if self.database_url is not None:
            return self.database_url
        url = URL.create(
            "postgresql+asyncpg",
            username=self.postgres_user,
            password=self.postgres_password.get_secret_value(),
            host=self.postgres_host,
            port=self.postgres_port,
            database=self.postgres_db,
        )
        return SecretStr(url.render_as_string(hide_password=False))

    @property
    def redis_dsn(self) -> SecretStr:
        if self.redis_url is not None:
            return self.redis_url
        auth = f":{self.redis_password.get_secret_value()}@" if self.redis_password else ""
        return SecretStr(f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}")

    @field_validator("web_concurrency")
    @classmethod
    def _one_worker(cls, value: int | None) -> int | None:
        if value is not None and value > 1:
            raise ValueError(
                "this API runs one worker per process; scale with replicas (API_REPLICAS), each "
                "scraped as its own Prometheus target"
            )
        return value

    @field_validator("prometheus_multiproc_dir")
    @classmethod
    def _no_multiprocess_metrics(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "prometheus_client's multiprocess mode is not supported: one worker per process, "
                "one registry per replica; unset PROMETHEUS_MULTIPROC_DIR"
            )
        return value

    @model_validator(mode="after")
    def _drain_fits_in_grace(self) -> Self:
        if self.drain_min_seconds + 1 > self.shutdown_grace_seconds:
            raise ValueError(
                "DRAIN_MIN_SECONDS must stay at least a second below SHUTDOWN_GRACE_SECONDS, "
                "or the requests in flight have no time left to finish"
            )
        return self

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
