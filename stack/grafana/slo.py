"""SLOs: per objective its SLI now and over 30 days, the error budget left, and the burn rate of
every alert window beside the threshold that pages or tickets; the alerts firing or pending.

Everything is read from the recording rules of services/prometheus/rules (api_recording.yml,
slo_recording.yml), the same series the burn-rate alerts in slo_alerts.yml evaluate, so the
dashboard and the alerts cannot disagree. The objectives and the tiers below are those of
slo_alerts.yml; tests/static/test_grafana_dashboards.py holds them equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from grafana_foundation_sdk.models.dashboard import Dashboard

from stack.grafana.layout import GRID_WIDTH, Layout, Query, thresholds

# The error budget's period, in seconds: budget left as time is a share of it.
PERIOD_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class Tier:
    """One multiwindow burn-rate alert: long and short window, the burn rate that fires it."""

    long: str
    short: str
    factor: float
    severity: str  # "page" (critical) or "ticket" (warning)


TIERS = (
    Tier("1h", "5m", 14.4, "page"),
    Tier("6h", "30m", 6, "page"),
    Tier("1d", "2h", 3, "ticket"),
    Tier("3d", "6h", 1, "ticket"),
)


@dataclass(frozen=True)
class Slo:
    name: str
    title: str
    objective: float
    # The recording rules' name up to the window, and the label selecting the SLO's series.
    sli_prefix: str
    selector: str

    @property
    def budget(self) -> float:
        return round(1 - self.objective, 6)

    def sli(self, window: str) -> str:
        return f"{self.sli_prefix}{window}{{{self.selector}}}"

    def burn(self, window: str) -> str:
        return f"(1 - {self.sli(window)}) / {self.budget:g}"


AVAILABILITY = Slo(
    "availability",
    "Availability: 99.9% of requests succeed (API 5xx and edge probes through nginx)",
    0.999,
    "service:sli_availability:ratio_rate",
    'service="api"',
)
LATENCY = Slo(
    "latency",
    "Latency: 99% of requests within 250 ms",
    0.99,
    "job:sli_latency:ratio_rate",
    'job="api"',
)
SLOS = (AVAILABILITY, LATENCY)


def _objective_rows(d: Layout, slo: Slo) -> None:
    d.row(slo.title)
    good = thresholds("red", (slo.objective, "green"))
    d.stat(
        "Objective",
        f"Share of requests that must be good over {PERIOD_SECONDS // 86400} days.",
        "percentunit",
        [Query(f"vector({slo.objective:g})", "objective")],
        thresholds("blue"),
        width=4,
        instant=True,
    )
    d.stat(
        "SLI now (5m)",
        "Share of good requests over the last 5 minutes; below the objective the budget burns.",
        "percentunit",
        [Query(slo.sli("5m"), "SLI 5m")],
        good,
        width=5,
        instant=True,
        no_value="no traffic",
    )
    d.stat(
        "SLI, 30 days",
        "Share of good requests over the SLO's 30-day period (as far back as Prometheus keeps).",
        "percentunit",
        [Query(slo.sli("30d"), "SLI 30d")],
        good,
        width=5,
        instant=True,
        no_value="no traffic",
    )
    left = f"1 - (1 - {slo.sli('30d')}) / {slo.budget:g}"
    d.stat(
        "Error budget left",
        "Share of the 30-day error budget not yet spent; below 0 the SLO is missed.",
        "percentunit",
        [Query(left, "budget left")],
        thresholds("red", (0, "orange"), (0.25, "green")),
        width=5,
        instant=True,
        no_value="no traffic",
    )
    d.stat(
        "Error budget left, as time",
        "How long a total outage the rest of the budget allows: the budget left times the "
        "30-day period times the allowed bad share.",
        "s",
        [Query(f"({left}) * {slo.budget:g} * {PERIOD_SECONDS}", "outage time left")],
        thresholds("red", (0, "orange"), (0.25 * slo.budget * PERIOD_SECONDS, "green")),
        width=5,
        instant=True,
        no_value="no traffic",
    )
    for tier in TIERS:
        pages = "pages" if tier.severity == "page" else "tickets"
        alarm = "red" if tier.severity == "page" else "orange"
        d.stat(
            f"Burn rate {tier.long} / {tier.short} ({pages} at {tier.factor:g}x)",
            f"Budget burn rate over the alert's long ({tier.long}) and short ({tier.short}) "
            f"windows; 1x spends the budget in exactly 30 days. Both above {tier.factor:g}x "
            f"(with at least 10 bad events) {pages}.",
            "suffix:x",
            [
                Query(slo.burn(tier.long), tier.long),
                Query(slo.burn(tier.short), tier.short),
            ],
            thresholds("green", (1, "orange"), (tier.factor, alarm)),
            width=GRID_WIDTH // len(TIERS),
            instant=True,
            no_value="no traffic",
        )
    d.timeseries(
        "Burn rate by alert window",
        "Burn rate over each alert's long window, and the page (14.4x, 6x) and ticket (3x, 1x) "
        "thresholds it is compared with.",
        "suffix:x",
        [
            *(Query(slo.burn(tier.long), f"burn {tier.long}") for tier in TIERS),
            *(
                Query(f"vector({tier.factor:g})", f"{tier.severity} {tier.long} ({tier.factor:g}x)")
                for tier in TIERS
            ),
        ],
        width=16,
        min_value=0,
    )
    d.stat(
        "Alerts firing",
        f"Burn-rate alerts of the {slo.name} SLO firing now.",
        "none",
        [Query(f'count(ALERTS{{slo="{slo.name}", alertstate="firing"}}) or vector(0)', "firing")],
        thresholds("green", (1, "red")),
        width=8,
        height=8,
        instant=True,
    )


def slo() -> Dashboard:
    d = Layout(
        "slo",
        "SLOs",
        "The API's service level objectives: each SLI now and over 30 days, the error budget "
        "left, and the burn rate of every alert window beside the threshold that pages or "
        "tickets (services/prometheus/rules/slo_alerts.yml).",
    )
    d.alert_annotations()
    for objective in SLOS:
        _objective_rows(d, objective)
    d.row("Alerts")
    d.info_table(
        "Alerts firing or pending",
        "Every alert Prometheus holds now, from ALERTS; StackWatchdog always fires, proving the "
        "alerting pipeline runs.",
        [Query("ALERTS")],
        hide=["Time", "Value", "__name__"],
        width=GRID_WIDTH,
    )
    return d.build()
