"""The simulated users: readers, writers and careless clients.

Every request is named by its route template ("/items/{item_id}"), the same string the API's
`handler` label carries, so client and server numbers join per route. Requests made to provoke
an error carry a note after the route ("/items/{item_id} (unknown id)"): Locust lists them apart,
the report still counts them under their route. Each request states the status it expects; that
status is a success, anything else a failure, so a deliberate 404 passes and an accidental one
does not.
"""

from __future__ import annotations

import random
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any

from locust import FastHttpUser, task
from locust.env import Environment

from loadtest.dataset import DataSet
from loadtest.schedule import OFFERED, Arrivals
from loadtest.settings import KNOBS
from loadtest.sources import SourceBoundClientPool, next_address

PROBLEM_JSON = "application/problem+json"

_data: DataSet | None = None


def set_data(data: DataSet) -> None:
    global _data  # noqa: PLW0603 - one data set per process, replaced when a test starts
    _data = data


def data() -> DataSet:
    if _data is None:
        raise RuntimeError("no seed data: run through `python -m loadtest` (make loadtest)")
    return _data


def trusting(ca: str) -> Callable[..., ssl.SSLContext]:
    """An SSL context factory for geventhttpclient that trusts `ca` alone, whatever CA file it
    is asked to load (it passes its bundled certifi's). Importing Locust has monkeypatched ssl,
    so the context is gevent's, as geventhttpclient's own default is."""

    def factory(**_: Any) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=ca)

    return factory


class ApiUser(FastHttpUser):
    abstract = True
    # A stalled answer is a failure of the run, not a user stuck for a minute.
    network_timeout = 30.0
    connection_timeout = 10.0

    def __init__(self, environment: Environment) -> None:
        options = environment.parsed_options
        # Locust's FastHttpUser checks no certificate by default; here an https:// target's is
        # checked (host name and chain), against --ca-file or the system's trust store.
        self.insecure = False
        if options is not None and options.ca_file:
            self.ssl_context_factory = trusting(options.ca_file)
        if options is not None and options.spread_sources == "on":
            worker_index = int(getattr(environment.runner, "worker_index", 0))
            self.client_pool = SourceBoundClientPool(
                next_address(worker_index),
                concurrency=self.concurrency,
                network_timeout=self.network_timeout,
                connection_timeout=self.connection_timeout,
                insecure=self.insecure,
                ssl_context_factory=self.ssl_context_factory,
            )
        super().__init__(environment)
        self.rng = random.Random()  # noqa: S311 - traffic shape, not a secret
        rps = float(options.user_rps) if options is not None else float(KNOBS["user_rps"].default)
        # Poisson arrivals counted in what the run offered (schedule.py); wall-clock time, as
        # Locust counts the answers per second.
        self.arrivals = Arrivals(rps, self.rng, OFFERED, time.time())

    def wait_time(self) -> float:
        return self.arrivals.wait(time.time())

    def expect(self, method: str, path: str, name: str, status: int, **kwargs: Any) -> Any:
        """Send a request; exactly `status` (with problem+json for a 4xx) is a success."""
        with self.client.request(method, path, name=name, catch_response=True, **kwargs) as reply:
            got = reply.status_code
            if got != status:
                reply.failure(f"expected {status}, got {got or 'no answer'}")
            elif status >= 400 and reply.headers.get("content-type") != PROBLEM_JSON:
                reply.failure(f"expected a {status} problem+json, got {reply.headers}")
            else:
                reply.success()
        return reply

    def sign_up(self, role: str) -> tuple[int, dict[str, str]] | None:
        email = f"{role}-{uuid.uuid4().hex}@loadtest.example"
        reply = self.expect("POST", "/users", "/users", 201, json={"email": email, "name": role})
        if reply.status_code != 201:
            return None
        body = reply.json()
        return int(body["id"]), {"Authorization": f"Bearer {body['token']}"}


class Reader(ApiUser):
    """Opens items (mostly hot ones), pages through the catalogue, looks at owners."""

    weight = int(KNOBS["reader_weight"].default)

    def on_start(self) -> None:
        self.cursor: int | None = None
        self.pages_left = 0

    @task(70)
    def open_item(self) -> None:
        item_id = data().item(self.rng)
        self.expect("GET", f"/items/{item_id}", "/items/{item_id}", 200)

    @task(20)
    def browse(self) -> None:
        if self.pages_left <= 0:
            self.cursor, self.pages_left = None, self.rng.randint(1, 5)
        query = "?limit=20" + (f"&cursor={self.cursor}" if self.cursor is not None else "")
        reply = self.expect("GET", f"/items{query}", "/items", 200)
        self.pages_left -= 1
        self.cursor = reply.json().get("next_cursor") if reply.status_code == 200 else None
        if self.cursor is None:
            self.pages_left = 0

    @task(5)
    def owner_items(self) -> None:
        self.expect("GET", f"/items?owner_id={data().user(self.rng)}&limit=20", "/items", 200)

    @task(5)
    def owner_profile(self) -> None:
        self.expect("GET", f"/users/{data().user(self.rng)}", "/users/{user_id}", 200)


class Writer(ApiUser):
    """Signs up, then creates, updates (with If-Match) and deletes its own items."""

    weight = int(KNOBS["writer_weight"].default)
    max_items = 20

    def on_start(self) -> None:
        self.account = self.sign_up("writer")
        self.etags: dict[int, str] = {}  # own item id -> its current ETag
        self.stale: dict[int, str] = {}  # own item id -> an ETag it had before the last update

    def _auth(self) -> dict[str, str] | None:
        if self.account is None:
            self.account = self.sign_up("writer")
        return self.account[1] if self.account else None

    @task(4)
    def create(self) -> None:
        auth = self._auth()
        if auth is None:
            return
        if len(self.etags) >= self.max_items:
            self.delete()
            return
        payload = {
            "name": f"w{self.rng.randrange(10**6)}",
            "price": self.rng.randint(1, 10**5) / 100,
        }
        reply = self.expect("POST", "/items", "/items", 201, json=payload, headers=auth)
        if reply.status_code == 201:
            self.etags[int(reply.json()["id"])] = reply.headers["etag"]

    @task(5)
    def update(self) -> None:
        auth = self._auth()
        if auth is None or not self.etags:
            self.create()
            return
        item_id = self.rng.choice(list(self.etags))
        headers = {**auth, "If-Match": self.etags[item_id]}
        payload = {"price": self.rng.randint(1, 10**5) / 100}
        reply = self.expect(
            "PATCH", f"/items/{item_id}", "/items/{item_id}", 200, json=payload, headers=headers
        )
        if reply.status_code == 200:
            self.stale[item_id] = self.etags[item_id]
            self.etags[item_id] = reply.headers["etag"]

    @task(1)
    def update_with_stale_etag(self) -> None:
        """A write based on an old read: the API must answer 412, not overwrite."""
        auth = self._auth()
        candidates = [item_id for item_id in self.stale if item_id in self.etags]
        if auth is None or not candidates:
            self.update()
            return
        item_id = self.rng.choice(candidates)
        self.expect(
            "PATCH",
            f"/items/{item_id}",
            "/items/{item_id} (stale If-Match)",
            412,
            json={"name": "lost update"},
            headers={**auth, "If-Match": self.stale[item_id]},
        )

    @task(2)
    def delete(self) -> None:
        auth = self._auth()
        if auth is None or not self.etags:
            self.create()
            return
        item_id = next(iter(self.etags))  # the oldest
        headers = {**auth, "If-Match": self.etags.pop(item_id)}
        self.stale.pop(item_id, None)
        self.expect("DELETE", f"/items/{item_id}", "/items/{item_id}", 204, headers=headers)

    @task(3)
    def own_items(self) -> None:
        if self.account is not None:
            self.expect("GET", f"/items?owner_id={self.account[0]}&limit=20", "/items", 200)


class CarelessClient(ApiUser):
    """Sends the bad requests a public API gets all day; each must get its proper 4xx."""

    weight = int(KNOBS["careless_weight"].default)

    def on_start(self) -> None:
        self.account = self.sign_up("careless")

    @task(3)
    def unknown_item(self) -> None:
        item_id = DataSet.unknown_id(self.rng)
        self.expect("GET", f"/items/{item_id}", "/items/{item_id} (unknown id)", 404)

    @task(2)
    def unknown_user(self) -> None:
        user_id = DataSet.unknown_id(self.rng)
        self.expect("GET", f"/users/{user_id}", "/users/{user_id} (unknown id)", 404)

    @task(2)
    def invalid_item(self) -> None:
        if self.account is None:
            return
        self.expect(
            "POST",
            "/items",
            "/items (invalid body)",
            422,
            json={"name": "", "price": -1},
            headers=self.account[1],
        )

    @task(1)
    def item_without_token(self) -> None:
        self.expect("POST", "/items", "/items (no token)", 401, json={"name": "x", "price": 1})

    @task(1)
    def invalid_sign_up(self) -> None:
        body = {"email": "not-an-address", "name": "careless"}
        self.expect("POST", "/users", "/users (invalid body)", 422, json=body)

    @task(1)
    def page_too_large(self) -> None:
        self.expect("GET", "/items?limit=1000", "/items (limit over 100)", 422)

    @task(1)
    def someone_elses_item(self) -> None:
        if self.account is None:
            return
        item_id = data().item(self.rng)
        self.expect(
            "DELETE",
            f"/items/{item_id}",
            "/items/{item_id} (not the owner)",
            403,
            headers=self.account[1],
        )
