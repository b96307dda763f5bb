"""Every path of the API and its methods, as the OpenAPI document lists them.

The document is the API's own public table of what each path accepts (FastAPI nests included
routers inside `app.routes`, so walking those would be private structure); the 405's `Allow`
(app.errors.http) and the 5xx series created at start-up (app.observability.metrics) read it here.
"""

from collections.abc import Iterator

from fastapi import FastAPI

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def operations(app: FastAPI) -> Iterator[tuple[str, set[str]]]:
    """(path template, its upper-case methods) for every path of `app`'s document."""
    for path, entries in app.openapi().get("paths", {}).items():
        yield path, {method.upper() for method in entries if method in HTTP_METHODS}
