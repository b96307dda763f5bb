"""The layout and PromQL helpers every generated dashboard is built from.

`Layout` places panels on Grafana's 24-column grid in build order and numbers them; the query
helpers keep the dashboards' PromQL in one style (every rate over `$__rate_interval`, ratios that
read 0 rather than vanish for groups without errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    Dashboard,
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableModel,
)

# Must equal the uid in provisioning/datasources/prometheus.yml. A fixed uid (instead of the
# datasource name or "default") keeps the dashboards portable to any Grafana that provisions the
# same datasource file.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")

# A "$__rate_interval" window always spans at least four scrapes (Grafana derives it from the
# datasource's timeInterval), so rates never go blank at any zoom level.
RATE_INTERVAL = "$__rate_interval"

# Shown on every API panel so a single replica can be isolated; "All" becomes ".*" rather than a
# regex of every currently known instance, which would silently drop replicas added later.
API = 'job="api", instance=~"$instance"'

# postgres_exporter reports one row per database plus a datname="" row for shared catalogs;
# neither that row nor template0/template1 ever sees application traffic.
PG = 'job="postgres", datname!~"template.*|"'

GRID_WIDTH = 24


def rate(selector: str) -> str:
    return f"rate({selector}[{RATE_INTERVAL}])"


def summed(inner: str, by: str = "") -> str:
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def ratio_or_zero(part: str, whole: str, by: str = "") -> str:
    """part/whole per group, 0 (not absent) for groups that have a whole but no part yet.

    Counters with a label such as status="503" only exist after the first such request, so a
    plain division would drop every handler or replica that never failed from the panel.
    """
    total = summed(rate(whole), by)
    return f"({summed(rate(part), by)} or {total} * 0) / {total}"


def rate_or_zero(part: str, whole: str, by: str = "") -> str:
    """The rate of `part` per group, 0 for groups that serve traffic but have no `part` yet."""
    return f"{summed(rate(part), by)} or {summed(rate(whole), by)} * 0"


def quantile(q: float, buckets: str, by: str = "") -> str:
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, {summed(rate(buckets), group)})"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


def targets(
    queries: Sequence[Query], *, instant: bool = False
) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    targets: list[cogbuilder.Builder[cogvariants.Dataquery]] = []
    for index, query in enumerate(queries):
        target = (
            prometheus.Dataquery()
            .ref_id(chr(ord("A") + index))
            .expr(query.expr)
            .datasource(DATASOURCE)
        )
        if query.legend:
            target = target.legend_format(query.legend)
        targets.append(target.instant() if instant else target.range())
    return targets


def thresholds(base: str, *steps: tuple[float, str]) -> dashboard_builders.ThresholdsConfig:
    # Without explicit steps Grafana falls back to green/red-at-80, which would paint a healthy
    # request rate or byte count red.
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=None, color=base)] + [Threshold(v, c) for v, c in steps])
    )


UP_DOWN = ValueMap(
    options={
        "0": ValueMappingResult(text="down", color="red", index=0),
        "1": ValueMappingResult(text="up", color="green", index=1),
    }
)

P = TypeVar("P", timeseries.Panel, stat.Panel, statetimeline.Panel, table.Panel)


class Layout:
    """Collects panels for one dashboard and hands out their ids.

    Ids follow build order, so they are unique by construction and stay stable between runs as
    long as panels are not reordered, which keeps the committed JSON diffs small.
    """

    def __init__(
        self,
        uid: str,
        title: str,
        description: str,
        variables: Sequence[cogbuilder.Builder[VariableModel]] = (),
    ) -> None:
        self._next_id = 1
        self.builder = (
            dashboard_builders.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["fastapi-stack", "generated"])
            .time("now-1h", "now")
            .refresh("30s")
            .timezone("browser")
            .tooltip(DashboardCursorSync.CROSSHAIR)
            # Grafana itself always saves both lists, even empty; matching its shape keeps a
            # dashboard exported from the UI diffable against the generated file.
            .variables(list(variables))
            .annotations([])
        )

    def _id(self) -> int:
        panel_id = self._next_id
        self._next_id += 1
        return panel_id

    def row(self, title: str) -> None:
        self.builder = self.builder.with_row(dashboard_builders.Row(title).id(self._id()))

    def _common(
        self,
        panel: P,
        title: str,
        description: str,
        unit: str,
        queries: Sequence[Query],
        width: int,
        height: int,
        *,
        instant: bool = False,
    ) -> P:
        return (
            panel.id(self._id())
            .title(title)
            .description(description)
            .unit(unit)
            .datasource(DATASOURCE)
            .targets(targets(queries, instant=instant))
            .span(width)
            .height(height)
        )

    def timeseries(
        self,
        title: str,
        description: str,
        unit: str,
        queries: Sequence[Query],
        *,
        width: int = 8,
        height: int = 8,
        stacked: bool = False,
        min_value: float | None = None,
        max_value: float | None = None,
    ) -> None:
        panel = self._common(timeseries.Panel(), title, description, unit, queries, width, height)
        panel = (
            panel.line_width(1)
            .fill_opacity(25 if stacked else 10)
            .show_points(common.VisibilityMode.NEVER)
            .legend(
                common_builders.VizLegendOptions()
                .show_legend(True)
                .display_mode(common.LegendDisplayMode.TABLE)
                .placement(common.LegendPlacement.BOTTOM)
                .calcs(["mean", "max", "lastNotNull"])
            )
            .tooltip(
                common_builders.VizTooltipOptions()
                .mode(common.TooltipDisplayMode.MULTI)
                .sort(common.SortOrder.DESCENDING)
            )
        )
        if stacked:
            panel = panel.stacking(
                common_builders.StackingConfig().mode(common.StackingMode.NORMAL)
            )
        if min_value is not None:
            panel = panel.min(min_value)
        if max_value is not None:
            panel = panel.max(max_value)
        self.builder = self.builder.with_panel(panel)

    def stat(
        self,
        title: str,
        description: str,
        unit: str,
        queries: Sequence[Query],
        thresholds: dashboard_builders.ThresholdsConfig,
        *,
        width: int = 5,
        height: int = 4,
        up_down: bool = False,
        instant: bool = False,
        no_value: str | None = None,
    ) -> None:
        """A big number. `instant` reads the value now: a range query reduced with lastNotNull
        keeps showing the last healthy value once the series stop (every replica gone)."""
        panel = self._common(
            stat.Panel(), title, description, unit, queries, width, height, instant=instant
        )
        sparkline = not (up_down or instant)
        panel = (
            panel.reduce_options(
                common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
            )
            .graph_mode(
                common.BigValueGraphMode.AREA if sparkline else common.BigValueGraphMode.NONE
            )
            .color_mode(
                common.BigValueColorMode.BACKGROUND if up_down else common.BigValueColorMode.VALUE
            )
            .text_mode(common.BigValueTextMode.AUTO)
            .thresholds(thresholds)
        )
        if up_down:
            panel = panel.mappings([UP_DOWN])
        if no_value is not None:
            panel = panel.no_value(no_value)
        self.builder = self.builder.with_panel(panel)

    def up_timeline(
        self, title: str, description: str, queries: Sequence[Query], *, width: int = 24
    ) -> None:
        panel = self._common(statetimeline.Panel(), title, description, "none", queries, width, 5)
        panel = (
            panel.mappings([UP_DOWN])
            .thresholds(thresholds("red", (1, "green")))
            .show_value(common.VisibilityMode.NEVER)
            .merge_values(True)
        )
        self.builder = self.builder.with_panel(panel)

    def info_table(
        self,
        title: str,
        description: str,
        queries: Sequence[Query],
        hide: Sequence[str],
        *,
        width: int = GRID_WIDTH // 3,
    ) -> None:
        panel = self._common(
            table.Panel(), title, description, "none", queries, width, 8, instant=True
        )
        panel = panel.with_transformation(
            DataTransformerConfig(
                id_val="organize", options={"excludeByName": dict.fromkeys(hide, True)}
            )
        )
        self.builder = self.builder.with_panel(panel)

    def alert_annotations(self) -> None:
        """Mark every firing alert (the Watchdog aside) on the dashboard's time series."""
        self.builder = self.builder.annotations(
            [
                dashboard_builders.AnnotationQuery()
                .name("Alerts firing")
                .datasource(DATASOURCE)
                .enable(True)
                .icon_color("red")
                .expr('ALERTS{alertstate="firing", severity=~"critical|warning"}')
            ]
        )

    def build(self) -> Dashboard:
        return self.builder.build()
