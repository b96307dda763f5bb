"""Starlette's HTTP errors (404 of an unknown path, 405, ...) as problems, 405 with a full Allow."""

import re

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from app.errors.problem import problem_response, reason_phrase
from app.openapi_operations import operations


class AllowedMethods:
    """Every method the OpenAPI document lists for a path (and HEAD wherever GET is).

    Starlette's 405 names only the methods of the first route whose path matched, so with GET
    and POST on /users as two routes, a PUT would be told `Allow: POST`. The document is the
    API's own list of what each path accepts; paths it leaves out (/metrics, /docs) get none.
    Built from the document on the first 405, once per app.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._table: list[tuple[re.Pattern[str], int, set[str]]] | None = None

    def _build(self) -> list[tuple[re.Pattern[str], int, set[str]]]:
        return [
            (
                re.compile("^" + re.sub(r"\\\{[^/}]+\\\}", "[^/]+", re.escape(path)) + "$"),
                path.count("{"),
                methods,
            )
            for path, methods in operations(self.app)
        ]

    def of(self, path: str) -> str | None:
        if self._table is None:
            self._table = self._build()
        # As OpenAPI matches paths: a concrete path wins over a templated one that also matches
        # (/users/me is not /users/{user_id}), so only the least templated matches count.
        matches = [(params, ops) for pattern, params, ops in self._table if pattern.match(path)]
        fewest = min((params for params, _ in matches), default=0)
        methods: set[str] = set()
        for params, allowed in matches:
            if params == fewest:
                methods |= allowed
        if "GET" in methods:
            methods.add("HEAD")
        return ", ".join(sorted(methods)) or None

    async def http_exception(self, request: Request, exc: Exception) -> Response:
        """The handler for Starlette's HTTPException."""
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else reason_phrase(exc.status_code)
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405 and (allowed := self.of(request.url.path)):
            headers["Allow"] = allowed
        return problem_response(request, exc.status_code, detail, headers=headers or None)
