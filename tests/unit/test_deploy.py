"""The deployment files under deploy/: Grafana dashboard and provisioning, Dockerfile, compose, systemd, Kubernetes.

Nothing here starts a container: the compose file is validated by `docker compose config -q` (client only, no
engine), the systemd unit by `systemd-analyze verify` when that tool exists, the rest by parsing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import load_settings
from monitor.export.metrics import METRICS_DOC

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
GENERATOR = DEPLOY / "grafana" / "dashboard.py"
DASHBOARD_JSON = DEPLOY / "grafana" / "dashboards" / "seqmon.json"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
UNIT = DEPLOY / "systemd" / "seqmon.service"
K8S = DEPLOY / "kubernetes" / "seqmon.yaml"
RULES_DIR = DEPLOY / "prometheus" / "rules"

METRICS_PORT = 9108
CONFIG_PATH = "/etc/seqmon/seqmon.toml"
ENTRYPOINT = ["seqmon", "run", "--config", CONFIG_PATH]


# ------------------------------------------------------------------------------------------ PromQL metric names
# Series Prometheus itself writes, usable in any query.
PROMETHEUS_SERIES = frozenset({"ALERTS", "ALERTS_FOR_STATE", "up"})
# Words of PromQL that look like metric names: operators and modifiers (the label lists after by/without/on/
# ignoring/group_* are removed before matching). Functions and aggregations are recognized by the "(" after them.
_PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"atan2", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# A name not preceded by a name character, `$` (Grafana variable) or `.` (decimals), not continued, and not a call.
_NAME = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (Grafana variables allowed)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _LABEL_LIST.sub(" ", text)
    return {m.group(1) for m in _NAME.finditer(text) if m.group(1).lower() not in _PROMQL_WORDS}


def exported_series() -> set[str]:
    """Series names seqmon exposes: METRICS_DOC names, plus _bucket/_sum/_count of its histograms."""
    names = set()
    for doc in METRICS_DOC:
        names.add(doc.name)
        if doc.type == "histogram":
            names.update(f"{doc.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


def recording_rules() -> set[str]:
    """Names recorded by deploy/prometheus/rules/*.yml (empty if that directory does not exist yet)."""
    names = set()
    for path in sorted(RULES_DIR.glob("*.y*ml")) if RULES_DIR.is_dir() else []:
        for group in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("groups", []):
            names.update(rule["record"] for rule in group.get("rules", []) if "record" in rule)
    return names


def test_promql_metric_names_parser():
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(seqmon_batch_duration_seconds_bucket{job="a"}[$__rate_interval])))'
        " / on(instance) group_left(topic) seqmon:window_mean_error:fleet offset 1h"
        ' or max without (x) (2 * ALERTS{alertname=~"Seqmon.*", alertstate="firing"} > bool 1e-3)'
        ' + time() - sum(increase(foo_total{a="{b}"}[5m])) by (topic)'
    )
    assert promql_metric_names(expr) == {
        "seqmon_batch_duration_seconds_bucket",
        "seqmon:window_mean_error:fleet",
        "ALERTS",
        "foo_total",
    }
    assert promql_metric_names("changes(seqmon_bundle_load_timestamp_seconds[5m]) > 0") == {
        "seqmon_bundle_load_timestamp_seconds"
    }


# ------------------------------------------------------------------------------------------ Grafana dashboard
def _generator():
    try:
        import grafana_foundation_sdk  # noqa: F401
    except ImportError:
        pytest.fail(
            "grafana-foundation-sdk is not installed; it is in the test extra: pip install -e '.[test]'",
            pytrace=False,
        )
    spec = importlib.util.spec_from_file_location("seqmon_grafana_dashboard", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return panels


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets, annotations, query variables."""
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", []) if "expr" in t]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            exprs.append(match.group(1) if match else query)  # label_values is Grafana's, not PromQL
    return exprs


def test_dashboard_json_is_generated_and_up_to_date():
    generator = _generator()
    assert DASHBOARD_JSON.read_text(encoding="utf-8") == generator.render(), (
        f"{DASHBOARD_JSON.relative_to(REPO)} differs from what {GENERATOR.relative_to(REPO)} builds: "
        f"run `python {GENERATOR.relative_to(REPO)}` and commit the JSON"
    )


def test_dashboard_queries_name_only_exported_metrics(dashboard):
    known = exported_series() | PROMETHEUS_SERIES
    recorded = recording_rules()
    exprs = _exprs(dashboard)
    assert len(exprs) >= 15
    unknown = {}
    for expr in exprs:
        names = promql_metric_names(expr)
        assert names, f"no metric name found in {expr!r}"
        for name in names - known:
            if ":" in name and name.startswith("seqmon:") and (name in recorded or not RULES_DIR.is_dir()):
                continue  # a recording rule of deploy/prometheus/rules
            unknown.setdefault(name, expr)
    assert not unknown, f"queries name metrics monitor/export/metrics.py does not export: {unknown}"


# Grafana's variables, replaced by something of the same kind so promtool can parse the query.
_GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def test_dashboard_queries_parse_as_promql(dashboard, tmp_path):
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool is not installed: it comes with Debian's prometheus package, which .ci/run installs "
            "(apt-get install prometheus)",
            pytrace=False,
        )

    def substitute(expr: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: _GRAFANA_VARIABLES.get(m.group(1), ".*"), expr)

    exprs = _exprs(dashboard)
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:expr_{i}", "expr": substitute(e)} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    result = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool rejects a dashboard query:\n{result.stdout}{result.stderr}"


def test_dashboard_per_topic_queries_follow_the_topic_variable(dashboard):
    topic_metrics = {d.name for d in METRICS_DOC if "topic" in d.labels}
    topic_metrics |= {f"{n}_bucket" for n in topic_metrics}
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            if promql_metric_names(target["expr"]) & topic_metrics:
                assert 'topic=~"$topic"' in target["expr"], (panel["title"], target["expr"])


def test_dashboard_contents(dashboard):
    assert dashboard["uid"] == "seqmon"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "prometheus"  # the provisioned uid
    topic = variables["topic"]
    assert topic["type"] == "query"
    assert topic["query"] == "label_values(seqmon_records_consumed_total, topic)"
    assert topic["includeAll"] and topic["multi"]

    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("targets"), panel["title"]
    by_expr = {t["expr"]: p for p in panels for t in p["targets"]}
    exprs = "\n".join(by_expr)

    # The headline: the shift with the page threshold seqmon exports, the decision, both comparisons, the surprise.
    shift = by_expr['seqmon_window_shift{topic=~"$topic"}']
    assert 'seqmon_deviation_shift_threshold{severity="page"}' in [t["expr"] for t in shift["targets"]]
    decision = by_expr['seqmon_window_severity{topic=~"$topic"}']
    assert [s["value"] for s in decision["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 1, 2]
    assert "seqmon_window_comparison_shift{" in exprs
    surprise = by_expr['seqmon_window_surprise{topic=~"$topic"}']
    assert 'seqmon_deviation_surprise_threshold{severity="page"}' in [t["expr"] for t in surprise["targets"]]
    assert dashboard["panels"][0]["title"].startswith("Deviation")

    abnormality = by_expr['seqmon_window_abnormality{topic=~"$topic"}']
    steps = abnormality["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 50, 75]
    for needle in (
        "seqmon_window_mean_error{",
        "seqmon_window_anomaly_ratio{",
        "seqmon_window_error_quantile{",
        "rate(seqmon_records_consumed_total{",
        "seqmon_records_invalid_total{",
        "seqmon_records_late_total{",
        "seqmon_consumer_lag_records{",
        "seqmon_bundle_info",
        "seqmon_bundle_reloads_total",
        'ALERTS{alertname=~"Seqmon.*"',
    ):
        assert needle in exprs, needle
    annotations = [a.get("expr", "") for a in dashboard["annotations"]["list"]]
    assert "changes(seqmon_bundle_load_timestamp_seconds[5m]) > 0" in annotations

    # Panels lie on the 24-column grid without overlapping.
    cells = set()
    for panel in _panels(dashboard):
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_grafana_provisioning():
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["uid"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"

    dashboards = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/seqmon.yml").read_text())
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# ------------------------------------------------------------------------------------------ Dockerfile
def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _env_pairs(rest: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(rest))


def test_dockerfile():
    instructions = _dockerfile_instructions()
    runtime = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]  # the last stage
    values = {}
    for keyword, rest in runtime:
        values.setdefault(keyword, []).append(rest)

    assert all(rest.split()[0] == "python:3.11-slim" for k, rest in instructions if k == "FROM")
    (user,) = values["USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert values["EXPOSE"] == [str(METRICS_PORT)]
    volumes = json.loads(values["VOLUME"][0])
    assert {"/bundle", "/state"} <= set(volumes)
    (entrypoint,) = values["ENTRYPOINT"]
    assert json.loads(entrypoint) == ENTRYPOINT
    (healthcheck,) = values["HEALTHCHECK"]
    # The same settings as the daemon, so the check follows metrics.port and metrics.web_config_file (TLS).
    assert json.loads(healthcheck.split("CMD", 1)[1]) == ["seqmon", "health", "--config", CONFIG_PATH]
    env = {}
    for rest in values["ENV"]:
        env.update(_env_pairs(rest))
    assert env["SEQMON_METRICS_HOST"] == "0.0.0.0"
    assert any("pip install ." in rest for k, rest in instructions if k == "RUN")
    assert any(rest.split()[-1] == CONFIG_PATH for k, rest in runtime if k == "COPY")

    settings = load_settings(
        REPO / "config" / "seqmon.toml", env={k: v for k, v in env.items() if k.startswith("SEQMON_")}
    )
    assert (settings.metrics.host, settings.metrics.port) == ("0.0.0.0", METRICS_PORT)
    assert (settings.model.bundle, settings.state.directory) == ("/bundle", "/state")


# ------------------------------------------------------------------------------------------ docker compose
def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail(
            "the docker client is not on PATH: it is needed (no engine) to validate deploy/docker-compose.yml "
            "with `docker compose config -q`",
            pytrace=False,
        )
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    pytest.fail(
        "`docker compose` does not work here (the Compose plugin is missing: "
        f"{(probe.stderr or probe.stdout).strip()!r}) and there is no standalone docker-compose on PATH; "
        "install the Docker Compose v2 plugin to validate deploy/docker-compose.yml",
        pytrace=False,
    )


def test_compose_file_validates():
    command = _compose_command() + ["-f", str(COMPOSE), "config", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert result.returncode == 0, f"{shlex.join(command)} failed:\n{result.stdout}{result.stderr}"


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Source -> target of a service's short-syntax volumes (SOURCE:TARGET[:MODE]; SOURCE may hold ${VAR:-x})."""
    mounts = {}
    for volume in service["volumes"]:
        parts = volume.rsplit(":", 2)
        if len(parts) == 3 and not parts[2].startswith("/"):
            source, target = parts[0], parts[1]
        else:
            source, target = volume.rsplit(":", 1)
        mounts[source] = target
    return mounts


def test_compose_services():
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) >= {"kafka", "seqmon", "prometheus", "grafana"}

    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert "PLAINTEXT://kafka:9092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]

    seqmon = services["seqmon"]
    assert seqmon["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert seqmon["read_only"] is True and seqmon["user"] == "10001:10001" and "/tmp" in seqmon["tmpfs"]
    assert (COMPOSE.parent / seqmon["build"]["context"] / seqmon["build"]["dockerfile"]).resolve() == DOCKERFILE
    env = seqmon["environment"]
    assert env["SEQMON_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    load_settings(REPO / "config" / "seqmon.toml", env={k: str(v) for k, v in env.items()})  # valid variables
    assert {"/bundle", "/state", CONFIG_PATH} <= set(_mounts(seqmon).values())

    prometheus_mounts = _mounts(services["prometheus"])
    assert prometheus_mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert prometheus_mounts["./prometheus/rules"] == "/etc/prometheus/rules"
    grafana_mounts = _mounts(services["grafana"])
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert grafana_mounts["./grafana/dashboards"] == "/var/lib/grafana/dashboards"


# ------------------------------------------------------------------------------------------ systemd
def _unit() -> dict[str, dict[str, list[str]]]:
    """Sections -> keys -> values in order (systemd keys may repeat; an empty value resets a list)."""
    unit: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def test_systemd_unit_keys():
    unit = _unit()
    service = unit["Service"]
    one = {key: values[-1] for key, values in service.items()}

    exec_start = shlex.split(one["ExecStart"])
    assert exec_start[0].endswith("/seqmon") and exec_start[1:] == ENTRYPOINT[1:]
    assert one["Restart"] == "on-failure" and one["RestartSec"]
    assert one.get("DynamicUser") == "yes" or one.get("User") not in (None, "", "root", "0")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "seqmon",
        "CapabilityBoundingSet": "",
        "KillSignal": "SIGTERM",
    }.items():
        assert one.get(key) == value, f"{key}={one.get(key)!r}, expected {value!r}"
    assert service["ReadWritePaths"]
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in service["SystemCallFilter"]
    assert re.fullmatch(r"\d+[KMGT]?", one["MemoryMax"])
    assert re.fullmatch(r"\d+(s|min)?", one["TimeoutStopSec"])
    assert "-HUP" in one["ExecReload"] and "$MAINPID" in one["ExecReload"]
    assert "WantedBy" in unit["Install"]


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: .ci/run installs Debian's systemd package, which provides it")
    # verify insists that ExecStart exists: point it at this environment's executable.
    executable = shutil.which("seqmon") or sys.executable
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={executable}", UNIT.read_text(encoding="utf-8"), flags=re.M)
    (tmp_path / UNIT.name).write_text(text, encoding="utf-8")
    result = subprocess.run([analyze, "verify", UNIT.name], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), f"systemd-analyze verify:\n{result.stderr}"


# ------------------------------------------------------------------------------------------ Kubernetes
@pytest.fixture(scope="module")
def k8s() -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all(K8S.read_text(encoding="utf-8")):
        if doc:
            assert {"apiVersion", "kind", "metadata"} <= set(doc)
            kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def test_kubernetes_deployment(k8s, tmp_path):
    (deployment,) = k8s["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == METRICS_PORT

    for probe_name in ("livenessProbe", "readinessProbe"):
        get = container[probe_name]["httpGet"]
        assert get["path"] == "/metrics", probe_name
        assert ports.get(get["port"], get["port"]) == METRICS_PORT, probe_name
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]

    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {"/bundle", "/state", str(Path(CONFIG_PATH).parent)} <= set(mounts)
    assert all(name in volumes for name in mounts.values())
    claims = {c["metadata"]["name"] for c in k8s.get("PersistentVolumeClaim", [])}
    for path in ("/bundle", "/state"):
        volume = volumes[mounts[path]]
        assert (
            "emptyDir" in volume
            or volume.get("persistentVolumeClaim", {}).get("claimName") in claims
            or ("image" in volume)
        ), path

    # The ConfigMap's seqmon.toml with the container's environment is a valid configuration.
    config_volume = volumes[mounts[str(Path(CONFIG_PATH).parent)]]
    (config_map,) = [c for c in k8s["ConfigMap"] if c["metadata"]["name"] == config_volume["configMap"]["name"]]
    toml = tmp_path / "seqmon.toml"
    toml.write_text(config_map["data"][Path(CONFIG_PATH).name], encoding="utf-8")
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = load_settings(toml, env=env)
    assert (settings.metrics.host, settings.metrics.port) == ("0.0.0.0", METRICS_PORT)
    assert (settings.model.bundle, settings.state.directory) == ("/bundle", "/state")


def test_kubernetes_service(k8s):
    (service,) = k8s["Service"]
    (deployment,) = k8s["Deployment"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"
    (port,) = service["spec"]["ports"]
    assert port["port"] == METRICS_PORT
    assert port["targetPort"] in ("metrics", METRICS_PORT)
