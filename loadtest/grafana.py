"""Mark the test window on Grafana's dashboards as an annotation tagged "loadtest".

The "Load test" dashboard shows annotations with that tag (any dashboard can add the same query).
Natively there is no Grafana, so without GRAFANA_URL this is skipped; an unreachable or refusing
Grafana is reported and skipped too: the annotation is a convenience, never part of the verdict.
"""

from __future__ import annotations

import base64

from loadtest.httpjson import HttpError, call
from loadtest.model import Window

TAG = "loadtest"


def _unusable(url: str, auth: tuple[str, str] | None) -> str:
    try:
        health = call("GET", f"{url}/api/health", timeout=3)
    except HttpError as exc:
        return f"not reachable at {url} ({exc})"
    if health.status != 200:
        return f"{url}/api/health answered {health.status}"
    if auth is None:
        return "no GRAFANA_API_TOKEN or GRAFANA_ADMIN_PASSWORD to post with"
    return ""


def annotate(
    url: str, auth: tuple[str, str] | None, window: Window, verdict: str, text: str
) -> str:
    """Post the annotation; return one line saying what happened."""
    if not url:
        return "Grafana: GRAFANA_URL not set, no annotation (natively there is no Grafana)"
    problem = _unusable(url, auth)
    if problem or auth is None:
        return f"Grafana: {problem}, no annotation"
    scheme, secret = auth
    if scheme == "Basic":
        secret = base64.b64encode(secret.encode()).decode()
    payload = {
        "time": int(window.start * 1000),
        "timeEnd": int(window.end * 1000),
        "tags": [TAG, verdict.lower()],
        "text": text,
    }
    try:
        answer = call(
            "POST", f"{url}/api/annotations", payload, {"Authorization": f"{scheme} {secret}"}
        )
    except HttpError as exc:
        return f"Grafana: posting the annotation failed ({exc})"
    if answer.status != 200:
        return f"Grafana: annotation refused ({answer.status} {answer.body[:200]!r})"
    return f"Grafana: window annotated at {url} (tag {TAG})"
