"""`make dev`: one API replica with auto-reload, beside its own PostgreSQL and Redis.

Data persists in the data folder between runs; Ctrl-C stops all three.
"""

import contextlib
import os
import subprocess
import sys

from stack.envfile import ensure_env
from stack.paths import API_DIR, REPO_ROOT, data_root
from stack.procs import free_port
from stack.servers import PostgresServer, RedisServer


def main() -> int:
    env_values = ensure_env(REPO_ROOT)
    dev_dir = data_root() / "dev"
    dev_dir.mkdir(parents=True, exist_ok=True)
    postgres = PostgresServer(
        dev_dir / "postgres",
        free_port(),
        user=env_values["POSTGRES_USER"],
        password=env_values["POSTGRES_PASSWORD"],
        database=env_values["POSTGRES_DB"],
    )
    fresh = not (postgres.data_dir / "PG_VERSION").exists()
    if fresh:
        os.chmod(dev_dir, 0o755)  # noqa: S103 - the postgres user must reach its data folder
        postgres.init()
    redis = RedisServer(free_port(), password=env_values["REDIS_PASSWORD"])
    postgres.start()
    try:
        if fresh:
            postgres.create_database()
        redis.start()
        env = {
            **os.environ,
            "APP_ENV": "development",
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "REPLICA_NAME": "dev",
        }
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=API_DIR, env=env, check=True
        )
        port = env_values.get("DEV_API_PORT", "8000")
        print(f"API: http://127.0.0.1:{port}  docs: http://127.0.0.1:{port}/docs", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            subprocess.run(
                [
                    sys.executable, "-m", "uvicorn", "app.main:create_app_from_env", "--factory",
                    "--reload", "--host", "127.0.0.1", "--port", port, "--no-access-log",
                ],
                cwd=API_DIR,
                env=env,
                check=False,
            )  # fmt: skip
    finally:
        redis.stop()
        postgres.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
