"""No rendering of the settings, no log line and no error page ever shows a password."""

import io
import json

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.main import create_app
from stack.procs import free_port
from stack.testing.api import assert_problem
from stack.testing.asgi import Serve

PG_SECRET = "pg-Secret-7f3a9c"
REDIS_SECRET = "redis-Secret-2b8e1d"


def _settings(**overrides: object) -> Settings:
    """Both passwords set, and both servers unreachable: every failure path runs."""
    values: dict[str, object] = {
        "app_env": "production",
        "postgres_host": "127.0.0.1",
        "postgres_port": free_port(),
        "postgres_password": PG_SECRET,
        "redis_host": "127.0.0.1",
        "redis_port": free_port(),
        "redis_password": REDIS_SECRET,
        "db_connect_timeout_seconds": 1.0,
        "replica_name": "secrets-test",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def _assert_no_secret(text: str) -> None:
    assert PG_SECRET not in text
    assert REDIS_SECRET not in text


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "database_url": f"postgresql+asyncpg://app:{PG_SECRET}@127.0.0.1:{free_port()}/app",
            "redis_url": f"redis://:{REDIS_SECRET}@127.0.0.1:{free_port()}/0",
        },
    ],
    ids=["composed", "urls"],
)
def test_no_rendering_of_the_settings_shows_a_password(overrides: dict[str, object]) -> None:
    settings = _settings(**overrides)
    for rendering in (
        repr(settings),
        str(settings),
        str(settings.model_dump()),
        settings.model_dump_json(),
        repr(settings.sqlalchemy_url),
        str(settings.redis_dsn),
    ):
        _assert_no_secret(rendering)
    # The URLs still carry them, for the clients that need them.
    assert PG_SECRET in settings.sqlalchemy_url.get_secret_value()
    assert REDIS_SECRET in settings.redis_dsn.get_secret_value()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"postgres_password": "changethis"}, "POSTGRES_PASSWORD is a placeholder"),
        ({"web_concurrency": 4}, "one worker per process"),
        # A grace under the drain's 4 s would cut the drain short (app.__main__.DRAIN_SECONDS).
        ({"shutdown_grace_seconds": 4}, "greater than or equal to 5"),
        # Swarm's drain floor must leave the requests in flight time to finish.
        ({"shutdown_grace_seconds": 6, "drain_min_seconds": 5.5}, "DRAIN_MIN_SECONDS"),
    ],
)
def test_a_refused_setting_does_not_print_the_others(
    overrides: dict[str, object], message: str
) -> None:
    """A start-up error lands in the replica's log: its message must not carry the input."""
    with pytest.raises(ValidationError, match=message) as refused:
        _settings(**overrides)
    _assert_no_secret(str(refused.value))


async def test_no_log_line_or_error_page_shows_a_password(
    serve: Serve, json_log: io.StringIO
) -> None:
    app = create_app(_settings())
    async with serve(app=app) as client:
        # Every failure path: the database refusing, Redis refusing (the cache fails open).
        problem = assert_problem(await client.get("/items/1"), 503)
        _assert_no_secret(str(problem))
        ready = await client.get("/health/ready")
        assert_problem(ready, 503)
        assert ready.json()["checks"]["cache"]["status"] == "down"
        _assert_no_secret(ready.text)
        created = await client.post("/users", json={"email": "a@b.co", "name": "x"})
        _assert_no_secret(created.text)
        # The clients an operator might print while debugging.
        _assert_no_secret(repr(app.state.engine) + repr(app.state.cache.redis))
    lines = json_log.getvalue()
    messages = {json.loads(line)["message"] for line in lines.splitlines()}
    assert {"started", "database unavailable: OperationalError", "stopped"} <= messages
    _assert_no_secret(lines)
