"""The hourly report as one self-contained HTML page: a chart of the closed windows and what broke in flagged hours.

``seqmon replay --report FILE.html`` and ``seqmon demo`` write it. The page has no external resource: the windows'
figures are embedded as JSON and a short script draws the chart as SVG (headline shift with the page and ticket
thresholds, anomaly share, mean error; paged hours shaded red, ticketed hours amber). Below the chart, a table of every
window and, for each flagged hour, the tokens that contributed most to the errors of its anomalous records (from
:meth:`monitor.bundle.Bundle.explain`), when the stream file is at hand.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from monitor.bundle import Bundle
    from monitor.deviation import DeviationSettings
    from monitor.window import ClosedWindow

__all__ = ["top_tokens", "write_report"]

#: Anomalous records explained per flagged window (the highest errors first; explaining is per record).
EXPLAINED_RECORDS = 300


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%MZ")


def _finite(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def top_tokens(bundle: Bundle, sequences: list[str], top: int = 8) -> list[dict[str, Any]]:
    """The tokens that contributed most to the errors of ``sequences`` (the anomalous records of a window).

    Each item: ``token``, ``position`` (None unless the encoding is positional), ``kind`` (``unexpected`` or
    ``missing``), ``records`` (how many of the sequences list it
    among their top three) and ``contribution`` (summed share of their errors), largest contribution first.
    """
    contribution: Counter = Counter()
    records: Counter = Counter()
    for sequence in sequences:
        for item in bundle.explain(sequence, top=3):
            key = (item["token"], item["position"], item["kind"])
            contribution[key] += item["contribution"]
            records[key] += 1
    return [
        {"token": token, "position": position, "kind": kind, "records": records[(token, position, kind)],
         "contribution": value}
        for (token, position, kind), value in contribution.most_common(top)
    ]


def _flagged_tokens(bundle: Bundle, stream: str | Path, windows: list[ClosedWindow]) -> dict[int, list[dict]]:
    """Top tokens of every flagged window, from the records of the stream file that fall in it."""
    from monitor.pipeline import read_stream_csv  # noqa: PLC0415

    flagged = {w.start_ms: w for w in windows if (w.assessment or {}).get("decision", "ok") != "ok"}
    if not flagged:
        return {}
    size = next(iter(flagged.values())).end_ms - next(iter(flagged.values())).start_ms
    picked: dict[int, list[str]] = {start: [] for start in flagged}
    for batch in read_stream_csv(stream, batch_size=200_000):
        starts = (batch.timestamps_ms // size) * size
        for start in np.intersect1d(np.unique(starts), list(flagged)).tolist():
            picked[start].extend(batch.values[i].decode("utf-8", "replace") for i in np.flatnonzero(starts == start))
    out = {}
    for start, sequences in picked.items():
        distinct = list(dict.fromkeys(sequences))
        errors = bundle.errors(distinct)
        anomalous = np.flatnonzero(np.nan_to_num(errors, nan=0.0) > bundle.threshold)
        worst = anomalous[np.argsort(-errors[anomalous], kind="stable")][:EXPLAINED_RECORDS]
        out[start] = top_tokens(bundle, [distinct[i] for i in worst])
    return out


def write_report(
    path: str | Path,
    windows: list[ClosedWindow],
    bundle: Bundle,
    settings: DeviationSettings,
    stream: str | Path | None = None,
) -> Path:
    """Write the report of ``windows`` (assessed closed windows, in order) to ``path``; returns the path.

    ``stream`` is the timestamped CSV the windows came from; without it the page has no top tokens.
    """
    path = Path(path)
    tokens = _flagged_tokens(bundle, stream, windows) if stream is not None else {}
    rows = []
    for w in windows:
        f = w.figures()
        rows.append({
            "start": _iso(w.start_ms),
            "topic": w.topic,
            "records": int(f["count"]),
            "shift": _finite(f.get("shift")),
            "surprise": _finite(f.get("surprise")),
            "against": f.get("compared_with", ""),
            "statistic": f.get("statistic", ""),
            "anomaly_pct": _finite(100 * f["anomaly_rate"]) if _finite(f["anomaly_rate"]) is not None else None,
            "mean_error": _finite(f["mean_error"]),
            "decision": f.get("decision", "ok"),
            "tokens": tokens.get(w.start_ms, []),
        })
    data = {
        "windows": rows,
        "page_shift": settings.page_shift,
        "ticket_shift": settings.ticket_shift,
        "page_surprise": settings.page_surprise,
        "ticket_surprise": settings.ticket_surprise,
        "bundle": bundle.content_hash,
    }
    table = "\n".join(
        "<tr class='{d}'><td>{start}</td><td>{topic}</td><td>{records:,}</td><td>{shift}</td><td>{surprise}</td>"
        "<td>{against}</td><td>{anomaly}</td><td>{mean}</td><td>{d}</td></tr>".format(
            d=html.escape(r["decision"]),
            start=r["start"],
            topic=html.escape(r["topic"]),
            records=r["records"],
            shift="" if r["shift"] is None else f"{r['shift']:.1f}",
            surprise="" if r["surprise"] is None else f"{r['surprise']:.1f}",
            against=html.escape(f"{r['against']} {r['statistic']}".strip()),
            anomaly="" if r["anomaly_pct"] is None else f"{r['anomaly_pct']:.2f} %",
            mean="" if r["mean_error"] is None else f"{r['mean_error']:.3g}",
        )
        for r in rows
    )
    flagged = "\n".join(
        "<h3>{start} {topic}: {d}, shift {shift}</h3><ul>{items}</ul>".format(
            start=r["start"],
            topic=html.escape(r["topic"]),
            d=html.escape(r["decision"]),
            shift="" if r["shift"] is None else f"{r['shift']:.1f} %",
            items="".join(
                f"<li><code>{html.escape(t['token'])}</code>"
                + ("" if t["position"] is None else f" at position {t['position']}")
                + f" {html.escape(t['kind'])}: in {t['records']} of the explained anomalous records</li>"
                for t in r["tokens"]
            )
            or "<li>no stream at hand, or no record above the bundle threshold</li>",
        )
        for r in rows
        if r["decision"] != "ok"
    ) or "<p>No hour was flagged.</p>"
    page = _PAGE.replace("__DATA__", json.dumps(data, allow_nan=False).replace("</", "<\\/"))
    page = page.replace("__TABLE__", table).replace("__FLAGGED__", flagged)
    page = page.replace("__PAGE_SHIFT__", f"{settings.page_shift:g}").replace(
        "__PAGE_SURPRISE__", f"{settings.page_surprise:g}"
    )
    path.write_text(page, encoding="utf-8")
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>seqmon hourly report</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; } td, th { padding: 2px 8px; text-align: right; border-bottom: 1px solid #eee; }
tr.page td { background: #fde0dc; } tr.ticket td { background: #fff3cd; }
#chart text { font-size: 11px; fill: #444; }
.legend span { margin-right: 1.2em; }
</style></head>
<body>
<h1>seqmon hourly report</h1>
<p>Shift: at least this percentage of a window's records moved to higher errors, against the window before or the
baseline of recent normal windows. A window pages when its shift reaches __PAGE_SHIFT__ % with a surprise
(-log10 p) of at least __PAGE_SURPRISE__; red: paged, amber: ticketed.</p>
<p class="legend"><span style="color:#c0392b">&#9644; shift</span><span style="color:#c0392b">- - page threshold</span>
<span style="color:#e0a800">- - ticket threshold</span><span style="color:#2471a3">&#9644; anomaly share %</span>
<span style="color:#555">&#9644; mean error (lower panel)</span></p>
<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="960" height="420" role="img"
  aria-label="hourly shift, anomaly share and mean error"></svg>
<h2>Windows</h2>
<table><tr><th>window start (UTC)</th><th>topic</th><th>records</th><th>shift %</th><th>surprise</th><th>against</th>
<th>anomalies</th><th>mean error</th><th>decision</th></tr>
__TABLE__
</table>
<h2>Flagged hours: the tokens behind their errors</h2>
__FLAGGED__
<script id="data" type="application/json">__DATA__</script>
<script>
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const rows = data.windows, svg = document.getElementById("chart"), NS = "http://www.w3.org/2000/svg";
  const W = 960, left = 50, right = 20, top = 10, h1 = 250, gap = 30, h2 = 110;
  const n = Math.max(rows.length, 1), step = (W - left - right) / n;
  const x = i => left + step * (i + 0.5);
  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  }
  const values = k => rows.map(r => r[k]).filter(v => v !== null);
  const yMax = Math.max(data.page_shift * 1.5, ...values("shift"), ...values("anomaly_pct"));
  const y1 = v => top + h1 - (v / yMax) * h1;
  const errs = values("mean_error"), eMax = Math.max(...errs, 1e-12), eMin = Math.min(...errs, eMax);
  const y2 = v => top + h1 + gap + h2 - (eMax > eMin ? (v - eMin) / (eMax - eMin) : 0.5) * h2;
  rows.forEach((r, i) => {
    if (r.decision !== "ok") {
      el("rect", {class: "flag flag-" + r.decision, x: left + step * i, y: top, width: step,
                  height: h1 + gap + h2, fill: r.decision === "page" ? "#f5b7b1" : "#fce8a6"});
    }
  });
  el("line", {x1: left, x2: W - right, y1: top + h1, y2: top + h1, stroke: "#999"});
  el("line", {x1: left, x2: W - right, y1: top + h1 + gap + h2, y2: top + h1 + gap + h2, stroke: "#999"});
  for (const [v, color, cls] of [[data.page_shift, "#c0392b", "threshold-page"], [data.ticket_shift, "#e0a800", "threshold-ticket"]]) {
    el("line", {class: cls, x1: left, x2: W - right, y1: y1(v), y2: y1(v), stroke: color, "stroke-dasharray": "6 4"});
  }
  for (const v of [0, yMax / 2, yMax]) el("text", {x: 4, y: y1(v) + 4}, v.toFixed(0) + " %");
  el("text", {x: 4, y: top + h1 + gap + 10}, eMax.toPrecision(2));
  el("text", {x: 4, y: top + h1 + gap + h2}, eMin.toPrecision(2));
  function line(key, y, color, cls) {
    let points = [];
    const flush = () => {
      if (points.length) el("polyline", {class: cls, points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2});
      points = [];
    };
    rows.forEach((r, i) => { if (r[key] === null) flush(); else points.push(x(i).toFixed(1) + "," + y(r[key]).toFixed(1)); });
    flush();
  }
  line("anomaly_pct", y1, "#2471a3", "series-anomaly");
  line("shift", y1, "#c0392b", "series-shift");
  line("mean_error", y2, "#555", "series-mean-error");
  const every = Math.ceil(n / 16);
  rows.forEach((r, i) => { if (i % every === 0) el("text", {x: x(i) - 14, y: top + h1 + gap + h2 + 14}, r.start.slice(5, 13)); });
  svg.setAttribute("data-rendered", String(rows.length));
  // Laid-out width of the drawn shift line (getBBox needs layout): lets a headless browser check the chart drew.
  const drawn = svg.querySelectorAll(".series-shift");
  svg.setAttribute("data-shift-width", String(Math.round(Array.from(drawn).reduce((w, e) => w + e.getBBox().width, 0))));
}());
</script>
</body></html>
"""
