"""Grafana dashboard of seqmon, as code (grafana-foundation-sdk).

    python deploy/grafana/dashboard.py            # (re)write deploy/grafana/dashboards/seqmon.json
    python deploy/grafana/dashboard.py --check    # exit 1 if the committed JSON is out of date
    python deploy/grafana/dashboard.py --stdout   # print it instead

The JSON is committed and provisioned into Grafana from deploy/grafana/provisioning/dashboards/seqmon.yml;
tests/unit/test_deploy.py fails when it differs from what this script builds, and when a query names a metric
that monitor/export/metrics.py does not export. Edit this file, never the JSON.

Every panel queries the Prometheus data source picked by the ``datasource`` variable (the provisioned one has
uid ``prometheus``) and is filtered by the ``topic`` variable.  The ``seqmon_window_*`` gauges change once per
closed event-time window (hourly by default), so they are drawn as steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import statetimeline as statetimeline_b
from grafana_foundation_sdk.builders import timeseries as timeseries_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

__all__ = ["DASHBOARD_UID", "OUTPUT", "build_dashboard", "dashboard_dict", "main", "render"]

DASHBOARD_UID = "seqmon"
OUTPUT = Path(__file__).resolve().parent / "dashboards" / "seqmon.json"

DS = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
T = 'topic=~"$topic"'  # the label filter of every per-topic query

# Abnormality is 50 when the errors of a window are distributed like those of the window before.
ABNORMALITY_WARN = 50
ABNORMALITY_CRIT = 75


# ---------------------------------------------------------------------------------------------- helpers
def _query(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False) -> prom_b.Dataquery:
    q = prom_b.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)
    return q.instant() if instant else q.range()


def _thresholds(*steps: tuple[float | None, str]) -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dash_m.ThresholdsMode.ABSOLUTE)
        .steps([dash_m.Threshold(value=value, color=color) for value, color in steps])
    )


def _legend(*calcs: str) -> common_b.VizLegendOptions:
    return (
        common_b.VizLegendOptions()
        .display_mode(common_m.LegendDisplayMode.TABLE if calcs else common_m.LegendDisplayMode.LIST)
        .placement(common_m.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(list(calcs))
    )


def _timeseries(
    title: str,
    description: str,
    *queries: prom_b.Dataquery,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    step: bool = False,
) -> timeseries_b.Panel:
    panel = (
        timeseries_b.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .height(height)
        .span(width)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common_m.VisibilityMode.NEVER)
        .legend(_legend("lastNotNull", "max"))
        .thresholds(_thresholds((None, "green")))
    )
    if step:
        panel = panel.line_interpolation(common_m.LineInterpolation.STEP_AFTER)
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _stat(
    title: str, description: str, query: prom_b.Dataquery, *, unit: str = "short", width: int = 6, height: int = 4
) -> stat_b.Panel:
    return (
        stat_b.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .height(height)
        .span(width)
        .graph_mode(common_m.BigValueGraphMode.NONE)
        .color_mode(common_m.BigValueColorMode.VALUE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(_thresholds((None, "green")))
        .with_target(query)
    )


# ---------------------------------------------------------------------------------------------- panels
def _deviation_panels() -> list[Any]:
    """The headline: how much of the window moved, how sure that is, and the decision seqmon made about it.

    Thresholds are drawn from the gauges seqmon exports (seqmon_deviation_*_threshold), i.e. the very values the
    code decides with, so the dashboard cannot disagree with the alert or `seqmon replay`.
    """
    dashed = [dash_m.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})]
    shift = (
        _timeseries(
            "Shift: % of the window that moved to higher errors (headline)",
            "Per topic, the statistic that decided about the last closed window: at least this percentage of its "
            "records moved to higher reconstruction errors, against the window before or against the baseline of "
            "recent normal windows (KS shift or tail excess; see the README). Dashed: the page and ticket shift "
            "thresholds; a window pages only when its surprise also reaches the page surprise.",
            _query(f"seqmon_window_shift{{{T}}}", "{{topic}}", "A"),
            _query('seqmon_deviation_shift_threshold{severity="page"}', "page threshold", "B"),
            _query('seqmon_deviation_shift_threshold{severity="ticket"}', "ticket threshold", "C"),
            width=16,
            step=True,
        )
        .min(0)
        .override_by_regexp(".* threshold", dashed)
    )
    decision = (
        _stat(
            "Decision, last closed window",
            "Per topic, made in seqmon (seqmon_window_severity): ok, ticket (SeqmonWindowShift) or page "
            "(SeqmonWindowDeviation).",
            _query(f"seqmon_window_severity{{{T}}}", "{{topic}}", instant=True),
            width=8,
            height=8,
        )
        .thresholds(_thresholds((None, "green"), (1, "yellow"), (2, "red")))
        .mappings([
            dash_m.ValueMap(
                options={
                    "0": dash_m.ValueMappingResult(text="ok"),
                    "1": dash_m.ValueMappingResult(text="ticket"),
                    "2": dash_m.ValueMappingResult(text="page"),
                }
            )
        ])
    )
    comparisons = _timeseries(
        "Shift by comparison and statistic",
        "Shift (0-100) of the last closed window against the previous window and against the baseline of recent "
        "normal windows, by statistic: ks (one-sided weighted Kolmogorov-Smirnov) and tail (excess share above the "
        "reference's 99th percentile). Every hour of a long incident stays high against the baseline.",
        _query(f"seqmon_window_comparison_shift{{{T}}}", "{{topic}} vs {{comparison}} ({{statistic}})"),
        step=True,
    ).min(0)
    surprise = (
        _timeseries(
            "Significance (surprise, -log10 p)",
            "Surprise of the headline shift: -log10 of the chance to see it in unchanged traffic, sized by the "
            "effective record counts, so one threshold holds at 100 and at 1,000,000 records per window. Dashed: "
            "the page and ticket surprise thresholds. Log scale.",
            _query(f"seqmon_window_surprise{{{T}}}", "{{topic}}", "A"),
            _query('seqmon_deviation_surprise_threshold{severity="page"}', "page threshold", "B"),
            _query('seqmon_deviation_surprise_threshold{severity="ticket"}', "ticket threshold", "C"),
            step=True,
        )
        .override_by_regexp(".* threshold", dashed)
        .scale_distribution(common_b.ScaleDistributionConfig().type(common_m.ScaleDistribution.SYMLOG).log(10))
    )
    return [shift, decision, comparisons, surprise]


def _window_panels() -> list[Any]:
    abnormality = (
        _timeseries(
            "Abnormality vs the previous window",
            "100 x probability that an error of the last closed window exceeds one of the window before: "
            f"50 = unchanged; above {ABNORMALITY_WARN} the errors grew, above {ABNORMALITY_CRIT} markedly. "
            "It is about 50 + half the share of records that broke, so it stays low for a minority of broken "
            "records; the decision uses the shift above. Gaps: empty windows or no window before.",
            _query(f"seqmon_window_abnormality{{{T}}}", "{{topic}}"),
            width=16,
            step=True,
        )
        .min(0)
        .max(100)
        .thresholds(_thresholds((None, "green"), (ABNORMALITY_WARN, "yellow"), (ABNORMALITY_CRIT, "red")))
        .thresholds_style(common_b.GraphThresholdsStyleConfig().mode(common_m.GraphThresholdsStyleMode.DASHED_AND_AREA))
    )
    abnormality_now = (
        _stat(
            "Abnormality, last closed window",
            f"Per topic; yellow from {ABNORMALITY_WARN}, red from {ABNORMALITY_CRIT}.",
            _query(f"seqmon_window_abnormality{{{T}}}", "{{topic}}", instant=True),
            width=8,
            height=8,
        )
        .min(0)
        .max(100)
        .decimals(1)
        .thresholds(_thresholds((None, "green"), (ABNORMALITY_WARN, "yellow"), (ABNORMALITY_CRIT, "red")))
    )
    mean_error = _timeseries(
        "Weighted mean reconstruction error",
        "Weighted mean autoencoder reconstruction error of the last closed window (dimensionless); dashed: "
        "the windows closed in the last hour by all daemons together (recording rule of deploy/prometheus).",
        _query(f"seqmon_window_mean_error{{{T}}}", "{{topic}}", "A"),
        _query(f"seqmon:window_mean_error:fleet{{{T}}}", "{{topic}} fleet (1h)", "B"),
        step=True,
    ).override_by_regexp(
        ".* fleet \\(1h\\)",
        [dash_m.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})],
    )
    mean_error_ratio = _timeseries(
        "Mean error / previous window",
        "Weighted mean error of the last closed window divided by that of the window before (1 = unchanged).",
        _query(f"seqmon_window_mean_error_ratio{{{T}}}", "{{topic}}"),
        step=True,
    )
    anomaly_ratio = _timeseries(
        "Anomaly ratio",
        "Weighted share of the last closed window's records whose error exceeds the bundle threshold.",
        _query(f"seqmon_window_anomaly_ratio{{{T}}}", "{{topic}}"),
        unit="percentunit",
        step=True,
    ).min(0)
    quantiles = _timeseries(
        "Reconstruction error quantiles",
        "Weighted error quantiles (0.5, 0.9, 0.99) of the last closed window, from a sketch; log scale.",
        _query(f"seqmon_window_error_quantile{{{T}}}", "{{topic}} q{{quantile}}"),
        step=True,
    ).scale_distribution(common_b.ScaleDistributionConfig().type(common_m.ScaleDistribution.LOG).log(10))
    records = _timeseries(
        "Records per closed window",
        "Records counted in the last closed window (late records are counted in no window).",
        _query(f"seqmon_window_records{{{T}}}", "{{topic}}"),
        step=True,
    ).min(0)
    since_close = _timeseries(
        "Time since the last window closed",
        "Wall-clock seconds since a window of the topic was last closed; it should stay below the window "
        "size plus the allowed lateness (SeqmonNoClosedWindow).",
        _query(f"time() - seqmon_window_closed_timestamp_seconds{{{T}}}", "{{topic}}"),
        unit="s",
    ).min(0)
    return [abnormality, abnormality_now, mean_error, mean_error_ratio, anomaly_ratio, quantiles, records, since_close]


def _stream_panels() -> list[Any]:
    rate = _timeseries(
        "Records per second",
        "Records read from Kafka (valid or not), scored by the autoencoder, and flagged anomalous.",
        _query(f"sum by (topic) (rate(seqmon_records_consumed_total{{{T}}}[5m]))", "{{topic}} consumed", "A"),
        _query(f"sum by (topic) (rate(seqmon_records_scored_total{{{T}}}[5m]))", "{{topic}} scored", "B"),
        _query(f"sum by (topic) (rate(seqmon_anomalies_total{{{T}}}[5m]))", "{{topic}} anomalous", "C"),
        unit="cps",
    ).min(0)
    invalid = _timeseries(
        "Invalid records by reason",
        "Records that could not be decoded or scored, per second, by reason (dead-lettered when configured).",
        _query(f"sum by (topic, reason) (rate(seqmon_records_invalid_total{{{T}}}[5m]))", "{{topic}} {{reason}}"),
        unit="cps",
    ).min(0)
    late = _timeseries(
        "Late records",
        "Scored records per second whose event-time window had already closed; they count in no window.",
        _query(f"sum by (topic) (rate(seqmon_records_late_total{{{T}}}[5m]))", "{{topic}}"),
        unit="cps",
    ).min(0)
    lag = _timeseries(
        "Consumer lag by partition",
        "Records between the consumer position and the end of each assigned partition.",
        _query(f"seqmon_consumer_lag_records{{{T}}}", "{{topic}}/{{partition}}"),
    ).min(0)
    batch = _timeseries(
        "Batch processing time",
        "Quantiles of the time to process one consumed batch (all topics).",
        _query("histogram_quantile(0.5, sum by (le) (rate(seqmon_batch_duration_seconds_bucket[5m])))", "p50", "A"),
        _query("histogram_quantile(0.99, sum by (le) (rate(seqmon_batch_duration_seconds_bucket[5m])))", "p99", "B"),
        unit="s",
        width=24,
    ).min(0)
    return [rate, invalid, late, lag, batch]


def _operations_panels() -> list[Any]:
    bundle = (
        _stat(
            "Model bundle in use",
            "Content hash and creation time of the model bundle each daemon scores with (seqmon_bundle_info).",
            _query("seqmon_bundle_info", "{{content_hash}} ({{created_at}})", instant=True),
            width=12,
        )
        .text_mode(common_m.BigValueTextMode.NAME)
        .color_mode(common_m.BigValueColorMode.NONE)
    )
    daemons_up = _stat(
        "Daemons up",
        'seqmon daemons Prometheus scrapes successfully (job "seqmon") out of those it scrapes (SeqmonDown).',
        _query('sum(up{job="seqmon"})', "up", instant=True),
        width=4,
    ).thresholds(_thresholds((None, "red"), (1, "green")))
    bundle_age = _stat(
        "Bundle loaded",
        "Time since the current model bundle was loaded (start, SIGHUP or a replaced bundle).",
        _query("time() - seqmon_bundle_load_timestamp_seconds", "{{instance}}", instant=True),
        unit="s",
        width=4,
    )
    checkpoint_age = _stat(
        "Last checkpoint",
        "Time since the last state checkpoint: at most this much work is redone after a crash.",
        _query("time() - seqmon_last_checkpoint_timestamp_seconds", "{{instance}}", instant=True),
        unit="s",
        width=4,
    )
    reloads = _timeseries(
        "Model bundle reloads",
        "Bundle reload attempts per hour, by result; a failure keeps the previous bundle in use.",
        _query("sum by (result) (increase(seqmon_bundle_reloads_total[1h]))", "{{result}}"),
        width=24,
    ).min(0)
    reloads = reloads.override_by_name(
        "failure", [dash_m.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"})]
    ).override_by_name(
        "success", [dash_m.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "green"})]
    )
    alerts = (
        statetimeline_b.Panel()
        .title("Seqmon alerts")
        .description("State of the Seqmon* Prometheus alerts (deploy/prometheus/rules): pending or firing.")
        .datasource(DS)
        .span(24)
        .height(8)
        .show_value(common_m.VisibilityMode.NEVER)
        .merge_values(True)
        .legend(_legend())
        .thresholds(_thresholds((None, "green")))
        .mappings(
            [
                dash_m.ValueMap(
                    options={
                        "1": dash_m.ValueMappingResult(text="pending", color="yellow", index=0),
                        "2": dash_m.ValueMappingResult(text="firing", color="red", index=1),
                    }
                )
            ]
        )
        .with_target(
            _query(
                'max by (alertname, topic) (2 * ALERTS{alertname=~"Seqmon.*", alertstate="firing"}'
                ' or ALERTS{alertname=~"Seqmon.*", alertstate="pending"})',
                "{{alertname}} {{topic}}",
            )
        )
    )
    return [bundle, daemons_up, bundle_age, checkpoint_age, reloads, alerts]


# ---------------------------------------------------------------------------------------------- dashboard
def build_dashboard() -> dash_b.Dashboard:
    """The dashboard builder (call ``.build()`` for the model)."""
    builder = (
        dash_b.Dashboard("seqmon")
        .uid(DASHBOARD_UID)
        .description("Streaming anomaly monitor: per-topic event-time windows, input quality, model and alerts.")
        .tags(["seqmon", "anomaly-detection", "kafka"])
        .editable()
        .refresh("1m")
        .time("now-24h", "now")
        .timezone("browser")
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dash_b.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .current(dash_m.VariableOption(selected=True, text="Prometheus", value="prometheus"))
        )
        .with_variable(
            dash_b.QueryVariable("topic")
            .label("Topic")
            .datasource(DS)
            .query("label_values(seqmon_records_consumed_total, topic)")
            .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dash_m.VariableOption(selected=True, text="All", value="$__all"))
        )
        .annotation(
            dash_b.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(dash_m.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .built_in(1)
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
        )
        .annotation(
            dash_b.AnnotationQuery()
            .name("Model reloads")
            .datasource(DS)
            .enable(True)
            .icon_color("blue")
            .expr("changes(seqmon_bundle_load_timestamp_seconds[5m]) > 0")
        )
        .annotation(
            dash_b.AnnotationQuery()
            .name("Failed model reloads")
            .datasource(DS)
            .enable(True)
            .icon_color("red")
            .expr('increase(seqmon_bundle_reloads_total{result="failure"}[5m]) > 0')
        )
    )
    sections = (
        ("Deviation: how much of the last closed window moved, and the decision", _deviation_panels()),
        ("Windows: last closed window per topic", _window_panels()),
        ("Stream: throughput, input quality, lag", _stream_panels()),
        ("Model bundle, state and alerts", _operations_panels()),
    )
    for title, panels in sections:
        builder = builder.with_row(dash_b.Row(title))
        for panel in panels:
            builder = builder.with_panel(panel)
    return builder


# Prometheus annotation fields the SDK's AnnotationQuery has no setter for.
_ANNOTATION_EXTRAS = {
    "Model reloads": {"step": "60s", "titleFormat": "Model bundle loaded", "textFormat": "{{instance}}"},
    "Failed model reloads": {"step": "60s", "titleFormat": "Model bundle reload failed", "textFormat": "{{instance}}"},
}


def dashboard_dict() -> dict[str, Any]:
    """The dashboard as the JSON-ready dict Grafana loads."""
    data = json.loads(JSONEncoder().encode(build_dashboard().build()))
    for annotation in data["annotations"]["list"]:
        annotation.update(_ANNOTATION_EXTRAS.get(annotation["name"], {}))
    return data


def render() -> str:
    """The dashboard JSON exactly as committed: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(dashboard_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help=f"exit 1 if {OUTPUT.name} is not up to date")
    mode.add_argument("--stdout", action="store_true", help="print the JSON instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
