"""Summaries of py-spy's raw (collapsed-stack) profiles: where a replica's CPU goes.

Each line of `py-spy record --format raw` is `frame;frame;...;leaf count`, a frame being
`function (path:line)`. The summary answers the two questions a miss raises: which library the
time is spent in (self time by package) and which calls cost the most (inclusive time).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>[^():]*)(?::\d+)?\)$")
_STDLIB = re.compile(r"/python3\.\d+/(?P<module>[^/]+?)(?:\.py)?(?:/|$)")


def package(path: str) -> str:
    """The top-level package of a frame's file: "fastapi", "app", "asyncio"...

    py-spy names a file relative to the sys.path entry it was imported from when it can
    ("fastapi/routing.py", "contextlib.py"), and by its absolute path otherwise.
    """
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/services/api/app/" in path:
        return "app"
    elif (stdlib := _STDLIB.search(path)) is not None:
        return stdlib["module"]
    return path.lstrip("<").split("/", 1)[0].removesuffix(".py").rstrip(">") or "?"


def _frame(frame: str) -> tuple[str, str]:
    """(function, path) of one frame, line number dropped so a function is one entry."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match["function"], match["path"]


def _short(function: str, path: str) -> str:
    where = path.split("site-packages/", 1)[-1]
    where = where.split("/services/api/", 1)[-1]
    return f"{function} ({where})"


def profile_summary(raw: str, top: int = 15) -> dict[str, Any]:
    by_package: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf_function, leaf_path = frames[-1]
        by_package[package(leaf_path)] += count
        self_time[_short(leaf_function, leaf_path)] += count
        # Once per stack, however often recursion repeats a frame.
        for name in {_short(f, p) for f, p in frames}:
            inclusive[name] += count
    if not total:
        return {"samples": 0, "text": "no samples"}

    def share(counter: Counter[str], limit: int, below: float = 1.0) -> list[tuple[str, float]]:
        return [
            (name, count / total) for name, count in counter.most_common() if count / total < below
        ][:limit]

    packages = share(by_package, top)
    leaves = share(self_time, top)
    # The event loop's own frames hold nearly every sample and say nothing.
    calls = share(inclusive, top + 10, below=0.9)
    lines = [f"{total} samples", "self time by package:"]
    lines += [f"  {value:6.1%}  {name}" for name, value in packages]
    lines += ["self time by function:"]
    lines += [f"  {value:6.1%}  {name}" for name, value in leaves]
    lines += ["inclusive time (frames on < 90% of samples):"]
    lines += [f"  {value:6.1%}  {name}" for name, value in calls]
    return {
        "samples": total,
        "self_by_package": dict(packages),
        "self_by_function": dict(leaves),
        "inclusive": dict(calls),
        "text": "\n".join(lines),
    }
