"""End to end, all real: Kafka broker -> `seqmon run` -> a Prometheus server loading the repo's rules.

A Prometheus server (Debian's `prometheus`, 127.0.0.1, free port, temporary TSDB) scrapes one daemon every second and
evaluates deploy/prometheus/rules/*.yml every second, as they are (no test copy). The daemon consumes two topics in
5-second windows: "a" gets three normal windows, then an incident window in which a minority (15 %) of the records
are a new kind of anomaly; "b" only normal windows. The test polls Prometheus until:

* every rule loaded from the rule files evaluates (rule health "ok") and its expression also runs through
  /api/v1/query; every recording rule returns data for both topics;
* every `expr` of the Grafana dashboards (deploy/grafana/dashboards/*.json, when present) runs through /api/v1/query;
* SeqmonWindowDeviation is active for "a" and nothing else is active (in particular not for "b");

and checks, over the whole run, that ALERTS never held SeqmonWindowDeviation while the last closed window of a topic
was a normal one: the page came for the incident window, and only for it.

The records carry event times about 2.5 minutes AHEAD of the wall clock (accepted: window.max_future_seconds is 300):
windows close by event time, so the deviating window stays the last closed window of "a" - and its gauges and alert
stay up - until the wall clock catches up, although idle closing is on (it closes windows by wall clock only).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from monitor.generate import SeedLikeGenerator
from tests.kafka_broker import create_topic, free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
WINDOW_S = 5
LATENESS_S = 1
PER_WINDOW = 600  # with 15 % new anomalies, the decision was "page" in 20 of 20 simulated windows (300: 9 of 10)
# Of the incident window: a minority, as real incidents are. The old rule (abnormality > 75) needed over half of the
# window to break; this window's abnormality stays near 55, and seqmon's decision pages on its shift.
ANOMALOUS_SHARE = 0.15
TIMEOUT_S = 90


# --------------------------------------------------------------------------------------------- processes


class Proc:
    """A child process whose output goes to a file (a pipe nobody reads would block it)."""

    def __init__(self, name: str, args: list[str], log_path: Path, **kwargs):
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs
        )

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"----- last lines of {self.name} ({self.log_path}) -----\n" + "\n".join(text)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}\n{self.tail()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=30)
        self._log.close()


class PrometheusServer:
    def __init__(self, proc: Proc, url: str, metrics_port: int):
        self.proc, self.url, self.metrics_port = proc, url, metrics_port

    def api(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400 / 422: a bad query; the body says why
            body = json.loads(exc.read() or b"{}")
        return body

    def query(self, expr: str) -> list[dict]:
        """Instant vector (or scalar) of ``expr`` now; fails on any error, with the expression."""
        body = self.api("/api/v1/query", query=expr)
        assert body.get("status") == "success", f"{expr!r}: {body.get('errorType')}: {body.get('error')}"
        result = body["data"]["result"]
        return result if body["data"]["resultType"] == "vector" else [{"metric": {}, "value": result}]

    def by_topic(self, expr: str) -> dict[str, float]:
        return {s["metric"].get("topic", ""): float(s["value"][1]) for s in self.query(expr)}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """A Prometheus server scraping 127.0.0.1:<metrics_port> (the daemon's, chosen here) every second.

    Started before the bundle is trained, so it already scrapes the (absent) target when the daemon comes up.
    """
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail(
            "the prometheus server is not installed: .ci/run installs Debian's prometheus package", pytrace=False
        )
    tmp = tmp_path_factory.mktemp("prometheus")
    metrics_port, port = free_port(), free_port()
    config = {  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [{"job_name": "seqmon", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config, indent=2))
    proc = Proc(
        "prometheus",
        [
            exe,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=info",
        ],
        tmp / "prometheus.log",
    )
    server = PrometheusServer(proc, f"http://127.0.0.1:{port}", metrics_port)
    try:
        wait_for(lambda: _ready(server.url), "Prometheus to be ready", [proc], timeout=60)
        yield server
    finally:
        proc.stop()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_daemon(bootstrap: str, bundle: Path, tmp: Path, topics: list[str], metrics_port: int) -> Proc:
    settings = {
        "kafka.bootstrap_servers": bootstrap,
        "kafka.topics": ",".join(topics),
        "kafka.group_id": f"g-{uuid.uuid4().hex[:8]}",
        "kafka.session_timeout_ms": 6000,
        "kafka.heartbeat_interval_ms": 1000,
        "model.bundle": bundle,
        "model.watch_interval_seconds": 0,
        "state.directory": tmp / "state",
        "window.size_seconds": WINDOW_S,
        "window.allowed_lateness_seconds": LATENESS_S,
        "window.idle_close_interval_seconds": 1,
        "metrics.host": "127.0.0.1",
        "metrics.port": metrics_port,
        "batch.max_latency_ms": 200,
    }
    args = [sys.executable, "-m", "monitor.cli", "run"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQMON_")}
    return Proc("seqmon run", args, tmp / "seqmon.log", env=env, cwd=REPO)


def wait_for(predicate, what: str, procs: list[Proc], timeout: float = TIMEOUT_S):
    """Poll ``predicate`` until it returns a truthy value (returned); fail with ``what`` and the process logs."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        for proc in procs:
            proc.check_alive()
        try:
            value = predicate()
        except AssertionError as exc:  # not there yet, e.g. a series without data; kept for the failure message
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(p.tail() for p in procs)
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_error}\n{logs}")
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------- records


def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    for ts, value in records:
        producer.send(topic, value=value, timestamp_ms=int(ts))
    producer.flush()
    producer.close()


def window_records(base_ms: int, w: int, sequences: list[str], rng) -> list[tuple[int, bytes]]:
    """``sequences`` in random order at random event times of window ``w``."""
    order = rng.permutation(len(sequences))
    stamps = base_ms + w * WINDOW_S * 1000 + np.sort(rng.integers(0, WINDOW_S * 1000, len(sequences)))
    return [(t, sequences[i].encode()) for t, i in zip(stamps.tolist(), order.tolist())]


# --------------------------------------------------------------------------------------------- Grafana


_GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(dashboard file, expr with template variables replaced) of every ``expr`` in the dashboards."""
    out = []

    def walk(node, variables, name):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str) and value.strip():
                    out.append((name, substitute(value, variables)))
                else:
                    walk(value, variables, name)
        elif isinstance(node, list):
            for item in node:
                walk(item, variables, name)

    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        variables = {v.get("name"): v for v in doc.get("templating", {}).get("list", [])}
        walk(doc.get("panels", []), variables, path.name)
    return out


def substitute(expr: str, variables: dict) -> str:
    """Grafana's ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]``: built-in intervals, else the variable's "All"
    value (``.*`` by default), as the dashboard would send with every topic selected."""

    def value(match):
        name = next(g for g in match.groups() if g)
        if name in _GRAFANA_BUILTINS:
            return _GRAFANA_BUILTINS[name]
        return variables.get(name, {}).get("allValue") or ".*"

    return re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)", value, expr)


# --------------------------------------------------------------------------------------------- the test


def test_rules_and_dashboards_evaluate_and_the_deviation_alert_fires(
    prometheus, kafka_bootstrap, bundle_path, tmp_path
):
    prom = prometheus
    deviating, normal = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    for topic in (deviating, normal):
        create_topic(kafka_bootstrap, topic, 1)  # one partition: records arrive in event-time order
    gen = SeedLikeGenerator(31)
    rng = np.random.default_rng(3)
    daemon = start_daemon(kafka_bootstrap, bundle_path, tmp_path, [deviating, normal], prom.metrics_port)
    procs = [daemon, prom.proc]
    try:
        wait_for(lambda: prom.query('up{job="seqmon"} == 1'), "Prometheus to scrape the daemon", procs)
        # Event times start 2.5 minutes ahead of the wall clock, aligned (see the module docstring): the gauges of
        # window 3 stay until the wall clock reaches window 4's end + lateness, about 2.9 minutes from now.
        ahead_ms = int(time.time() * 1000) + 150_000
        base = ahead_ms - ahead_ms % (WINDOW_S * 1000)

        # Phase 1: windows 0-2 of both topics (+ 3 empty records in "a"); records of window 2 close 0 and 1.
        for topic in (deviating, normal):
            records = []
            for w in range(3):
                records += window_records(base, w, gen.normal(PER_WINDOW), rng)
            if topic == deviating:
                records += [(base + 10, b"")] * 3  # invalid ("empty"), for the invalid-ratio rule
            produce(kafka_bootstrap, topic, records)
        closed = 'seqmon_windows_closed_total{job="seqmon"}'
        wait_for(
            lambda: len([v for v in prom.by_topic(closed).values() if v >= 2]) == 2,
            "Prometheus to see windows 0 and 1 of both topics closed",
            procs,
        )
        started_s = time.time()

        # Phase 2, scraped apart from phase 1 so the window counters increase under Prometheus' eyes: window 3 -
        # mostly anomalies in "a", normal in "b" - and one record in window 4 that closes windows 2 and 3.
        n_bad = int(PER_WINDOW * ANOMALOUS_SHARE)
        closer = (base + 4 * WINDOW_S * 1000 + LATENESS_S * 1000 + 100, gen.normal(1)[0].encode())
        # The invalid counter of "a" exists since phase 1: these 3 make it increase (a first value is no increase).
        empties = [(base + 3 * WINDOW_S * 1000 + 10, b"")] * 3
        produce(
            kafka_bootstrap,
            deviating,
            window_records(base, 3, gen.normal(PER_WINDOW - n_bad) + gen.abnormal(n_bad, "unknown"), rng)
            + empties
            + [closer],
        )
        produce(kafka_bootstrap, normal, window_records(base, 3, gen.normal(PER_WINDOW), rng) + [closer])
        wait_for(
            lambda: len([v for v in prom.by_topic(closed).values() if v >= 4]) == 2,
            "Prometheus to see windows 2 and 3 of both topics closed",
            procs,
        )
        assert prom.by_topic(closed) == {deviating: 4.0, normal: 4.0}  # window 4 still open
        assert prom.by_topic('seqmon_window_records{job="seqmon"}') == {deviating: PER_WINDOW, normal: PER_WINDOW}
        abnormality = prom.by_topic('seqmon_window_abnormality{job="seqmon"}')
        assert abnormality[deviating] < 75, abnormality  # the old rule would not have paged
        severity = prom.by_topic('seqmon_window_severity{job="seqmon"}')
        assert severity == {deviating: 2.0, normal: 0.0}, severity
        # (A normal window's shift can exceed 2.5 by chance at 600 records; its surprise then stays low: not decided.)
        assert prom.by_topic('seqmon_window_shift{job="seqmon"}')[deviating] > 2.5

        # Every rule of the rule files, as Prometheus loaded them: evaluated without error by the rule manager, and
        # its expression again through the query API.
        def rules_evaluated():
            groups = prom.api("/api/v1/rules")["data"]["groups"]
            rules = [(group["file"], rule) for group in groups for rule in group["rules"]]
            bad = [(r["name"], r["health"], r.get("lastError")) for _, r in rules if r["health"] != "ok"]
            assert not bad, f"rules not (yet) evaluated cleanly: {bad}"
            return rules

        rules = wait_for(rules_evaluated, "every rule to be evaluated", procs)
        assert sorted({file for file, _ in rules}) == [str(p) for p in RULE_FILES]
        alerting = {r["name"]: r for _, r in rules if r["type"] == "alerting"}
        recording = [r["name"] for _, r in rules if r["type"] == "recording"]
        assert {
            "SeqmonWindowDeviation",
            "SeqmonAnomalyRateJump",
            "SeqmonNoClosedWindow",
            "SeqmonDown",
            "SeqmonConsumerLagGrowing",
            "SeqmonInvalidRecordsHigh",
            "SeqmonBundleReloadFailed",
        } <= set(alerting)
        assert "seqmon:window_mean_error:fleet" in recording
        for name, rule in alerting.items():
            assert rule["labels"].get("severity") in ("page", "ticket"), name
            assert all(rule["annotations"].get(k, "").strip() for k in ("summary", "description", "runbook")), name
        for _, rule in rules:
            prom.query(rule["query"])

        # Recording rules return data for both topics (lag is refreshed every 10 s by the daemon, hence the wait).
        def recorded():
            got = {name: prom.by_topic(name) for name in recording}
            missing = {name: sorted(values) for name, values in got.items() if set(values) != {deviating, normal}}
            assert not missing, f"recording rules without both topics: {missing}"
            return got

        recorded_values = wait_for(recorded, "the recording rules to return both topics", procs)
        mean_error = recorded_values["seqmon:window_mean_error:fleet"]
        assert all(np.isfinite(v) and v > 0 for v in mean_error.values()), mean_error
        invalid = recorded_values["seqmon:records_invalid_ratio:fleet"]
        assert invalid[deviating] > 0 and invalid[normal] == 0, invalid

        # Dashboards (written separately; absent is fine): every panel query runs.
        for dashboard, expr in dashboard_exprs():
            try:
                prom.query(expr)
            except AssertionError as exc:
                raise AssertionError(f"{dashboard}: {exc}") from None

        # The alert: active for "a" only, and no other alert is active.
        def active_alerts():
            alerts = prom.api("/api/v1/alerts")["data"]["alerts"]
            return {(a["labels"]["alertname"], a["labels"].get("topic"), a["state"]) for a in alerts}

        wait_for(
            lambda: ("SeqmonWindowDeviation", deviating, "firing") in active_alerts(),
            "SeqmonWindowDeviation to fire for the deviating topic",
            procs,
        )
        assert active_alerts() == {("SeqmonWindowDeviation", deviating, "firing")}

        # Over the whole run, second by second: the page alert was in ALERTS only while the last closed window of its
        # topic was the incident window (window 3), never for a normal window of either topic.
        incident_start_s = (base + 3 * WINDOW_S * 1000) / 1000
        window_starts = 'seqmon_window_start_timestamp_seconds{job="seqmon"}'
        pages = 'ALERTS{alertname="SeqmonWindowDeviation"}'
        # The page reaches ALERTS' history at a rule evaluation; a 1 s step grid can end just before that sample, so
        # poll until the history holds it, then check the whole span up to then.
        def paged_topics():
            body = prom.api("/api/v1/query_range", query=pages, start=started_s - 30, end=time.time(), step="1s")
            topics = {s["metric"]["topic"] for s in body["data"]["result"]}
            assert topics, "no page in ALERTS' history yet"
            return topics

        assert wait_for(paged_topics, "the page to appear in ALERTS' history", procs) == {deviating}
        body = prom.api(
            "/api/v1/query_range",
            query=f"{pages} and on (instance, topic) ({window_starts} != {incident_start_s})",
            start=started_s - 30,
            end=time.time(),
            step="1s",
        )
        assert body["status"] == "success" and body["data"]["result"] == [], body

        # Once the deviating window has closed, the fleet mean error (sums over the last hour) shows it too. Polled:
        # the recording rule is evaluated on its own schedule, after the window's counters were scraped.
        def fleet_mean_error_shows_the_deviation():
            values = prom.by_topic("seqmon:window_mean_error:fleet")
            assert values[deviating] > values[normal], values
            return values

        wait_for(fleet_mean_error_shows_the_deviation, "the fleet mean error to reflect the deviating window", procs)
    finally:
        daemon.stop()
