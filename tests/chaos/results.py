"""Where the chaos suite's measurements go: JSON and docs/reliability.md's markdown table."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Git-ignored (see .gitignore); the reliability table in docs/ is copied from results.md.
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Results:
    """One entry per fault, written as JSON and as docs/reliability.md's markdown table."""

    faults: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, name: str, numbers: dict[str, Any]) -> None:
        self.faults[name] = numbers
        self.write()

    def write(self) -> None:
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        document = {"measured_at": stamp, "host_cpus": os.cpu_count(), "faults": self.faults}
        (RESULTS_DIR / "results.json").write_text(json.dumps(document, indent=2) + "\n")
        rows = [
            "| Fault | Requests (during fault) | Errors by status | p99 during fault | Recovery |",
            "|---|---|---|---|---|",
        ]
        for name, n in self.faults.items():
            errors = ", ".join(f"{k}: {v}" for k, v in n["errors"].items()) or "none"
            rows.append(
                f"| {name} | {n['requests']} ({n['requests_during_fault']}) | {errors} "
                f"| {n['p99_ms_during_fault']:.0f} ms | {n['recovery_seconds']:.1f} s |"
            )
        (RESULTS_DIR / "results.md").write_text(
            f"Measured {stamp} on {os.cpu_count()} CPUs by `make chaos`.\n\n"
            + "\n".join(rows)
            + "\n"
        )
