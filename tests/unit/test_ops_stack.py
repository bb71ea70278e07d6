"""The operations stack (docker-compose.yml, deploy/ for Prometheus and Grafana) against the real code.

There is no Docker engine in CI, so the stack is validated by parsing: every stream-al service's
command goes through the real CLI parser and its config (with the service's environment) through the
real settings model; ports, volumes, scrape targets and the Grafana data source must agree with those
configs; every metric a dashboard query names must be one the engine or the review app exports; and
the README's generated reference sections must equal what :mod:`stream_al.docs` renders now.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream_al import docs
from stream_al.cli import build_parser
from stream_al.config import Settings
from stream_al.metrics import Metrics
from stream_al.review.metrics import ReviewMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))

# The panels issue 6 asks for, each with the series that must feed it (a regex over its queries).
REQUIRED_PANELS = {
    "events/s": r"stream_al_events_total",
    "requests": r"stream_al_label_requests_total",
    "budget used": r"stream_al_budget_used_ratio",
    "queue depth": r"stream_al_review_queue_depth|stream_al_pending_requests",
    "label latency": r"stream_al_label_latency_seconds_bucket",
    "rolling audit accuracy": r"stream_al_audit_accuracy",
    "drift state": r"stream_al_drift_state",
    "drift detections": r"stream_al_drift_detected_total",
}

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _interpolate(value: Any) -> str:
    """Compose's ``${NAME:-default}`` with the defaults, as on a machine with nothing set."""
    text = str(value)
    for match in _INTERPOLATION.finditer(text):
        assert match.group(2) is not None, f"{match.group(0)} has no default: the demo would not start"
    return _INTERPOLATION.sub(lambda m: m.group(2), text)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: _interpolate(value) for key, value in env.items()}


def _container_path(path: str) -> Path:
    assert path.startswith("/app/config/"), path
    return ROOT / path.removeprefix("/app/")


def _stream_al_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in SERVICES.items() if "build" in s}


def _settings(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Settings]:
    """The service's parsed command and its settings: config file + the service's environment."""
    args = build_parser().parse_args(service["command"])
    for key in [k for k in os.environ if k.startswith("STREAM_AL_")]:
        monkeypatch.delenv(key)
    for key, value in _environment(service).items():
        monkeypatch.setenv(key, value)
    assert args.config, "every stream-al service names its config file"
    settings = Settings.load(_container_path(args.config))
    return args, settings


def _listens(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[str, int] | None:
    """Where the service's HTTP server (``/metrics``) listens, per its command and config."""
    args, settings = _settings(service, monkeypatch)
    if args.command == "run":
        return (settings.metrics.host, settings.metrics.port) if settings.metrics.enabled else None
    if args.command == "review":
        return (args.host or settings.review.host, args.port or settings.review.port)
    return None


def _named_volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/")):
            mounts[target] = source
    return mounts


def _bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def _inside(path: Path | str, mounts: dict[str, Any]) -> str | None:
    for target in mounts:
        if Path(path).is_relative_to(target):
            return target
    return None


# ---------------------------------------------------------------------------------------------
# compose


def test_compose_has_the_whole_stack():
    assert {"kafka", "topics", "engine", "review", "traffic", "prometheus", "grafana"} <= SERVICES.keys()
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    kafka_env = SERVICES["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "zookeeper" not in SERVICES
    assert SERVICES["prometheus"]["image"].startswith("prom/prometheus:")
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana:")
    for name, service in SERVICES.items():
        image = service.get("image")
        assert image is None or (":" in image and not image.endswith(":latest")), f"{name}: pin the image"
        depends = service.get("depends_on", [])
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"


def test_every_stream_al_service_runs_a_real_command_with_a_config_that_loads(monkeypatch):
    commands = {}
    for name, service in _stream_al_services().items():
        args, settings = _settings(service, monkeypatch)
        commands[name] = (args.command, getattr(args, "action", None), getattr(args, "traffic_only", None))
        assert settings.kafka.bootstrap_servers == "kafka:9092", name
        kafka_env = SERVICES["kafka"]["environment"]
        assert "PLAINTEXT://kafka:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
        depends = service.get("depends_on", {})
        assert "kafka" in depends or "topics" in depends, f"{name} starts before Kafka is up"
    assert commands["topics"] == ("topics", "create", None)
    assert commands["engine"][0] == "run"
    assert commands["review"][0] == "review"
    assert commands["traffic"] == ("demo", None, True)  # the demo producer and the simulated analysts


def test_review_app_gets_analysts_from_the_environment_not_the_config(monkeypatch):
    args, settings = _settings(SERVICES["review"], monkeypatch)
    assert len(settings.review.analysts) >= 1  # `stream-al review` refuses to start without analysts
    config_text = _container_path(args.config).read_text()
    for token in settings.review.analysts.values():
        assert token.get_secret_value() not in config_text
    for key, value in SERVICES["review"]["environment"].items():
        if key.startswith("STREAM_AL_REVIEW__ANALYSTS"):
            assert value.startswith("${"), f"{key}: a token must be overridable from the environment"


def test_published_ports_match_the_configs(monkeypatch):
    for name in ("engine", "review"):
        service = SERVICES[name]
        host, port = _listens(service, monkeypatch)
        assert host == "0.0.0.0", f"{name} must listen on all interfaces to be reachable from other containers"
        assert service["ports"] == [f"{port}:{port}"], name
        probe = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/readyz" in probe, f"{name}: healthcheck probes another port"
    assert "9090:9090" in SERVICES["prometheus"]["ports"]
    assert "3000:3000" in SERVICES["grafana"]["ports"]


def test_state_lives_in_named_volumes_the_image_prepares(monkeypatch):
    declared = set(COMPOSE.get("volumes") or {})
    dockerfile = (ROOT / "Dockerfile").read_text()
    _, engine = _settings(SERVICES["engine"], monkeypatch)
    _, review = _settings(SERVICES["review"], monkeypatch)
    for name, path in (("engine", engine.snapshots.dir), ("review", review.review.db_path)):
        mounts = _named_volume_mounts(SERVICES[name])
        target = _inside(path, mounts)
        assert target is not None, f"{name}: {path} is not on a volume"
        assert mounts[target] in declared, f"{name}: volume {mounts[target]} is not declared"
        # a fresh named volume takes the image directory's owner: the image must create it for its user
        assert re.search(rf"mkdir -p [^&]*{re.escape(target)}\b", dockerfile), target
        assert re.search(rf"chown stream-al [^&]*{re.escape(target)}\b", dockerfile), target
    for name, service in SERVICES.items():
        for target, source in _bind_mounts(service).items():
            assert source.exists(), f"{name}: bind mount {source} does not exist"
        for target, volume in _named_volume_mounts(service).items():
            assert volume in declared, f"{name}: volume {volume} is not declared"


# ---------------------------------------------------------------------------------------------
# Prometheus


def test_prometheus_scrapes_every_stream_al_http_server(monkeypatch):
    mounts = _bind_mounts(SERVICES["prometheus"])
    command = " ".join(SERVICES["prometheus"].get("command", []))
    config_path = re.search(r"--config\.file=(\S+)", command)
    config_path = config_path.group(1) if config_path else "/etc/prometheus/prometheus.yml"
    assert mounts[config_path] == (DEPLOY / "prometheus" / "prometheus.yml").resolve()

    targets = []
    for job in PROMETHEUS["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for static in job["static_configs"]:
            targets += static["targets"]
    assert targets
    listening = {}
    for name, service in _stream_al_services().items():
        where = _listens(service, monkeypatch)
        if where is not None:
            listening[name] = where
    assert set(listening) == {"engine", "review"}
    scraped = set()
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert host in SERVICES, f"scrape target {target}: no such service"
        assert host in listening, f"scrape target {target}: that service serves no /metrics"
        assert listening[host] == ("0.0.0.0", int(port)), f"scrape target {target} vs config {listening[host]}"
        scraped.add(host)
    assert scraped == set(listening), "every engine and review app is scraped"


# ---------------------------------------------------------------------------------------------
# Grafana


def _grafana_provisioning() -> tuple[dict[str, Any], dict[str, Any]]:
    root = DEPLOY / "grafana" / "provisioning"
    datasources = [yaml.safe_load(p.read_text()) for p in sorted((root / "datasources").glob("*.yml"))]
    providers = [yaml.safe_load(p.read_text()) for p in sorted((root / "dashboards").glob("*.yml"))]
    assert len(datasources) == 1 and len(providers) == 1
    return datasources[0], providers[0]


def test_grafana_is_provisioned_from_the_repository():
    mounts = _bind_mounts(SERVICES["grafana"])
    assert mounts["/etc/grafana/provisioning"] == (DEPLOY / "grafana" / "provisioning").resolve()
    datasources, providers = _grafana_provisioning()
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    match = re.fullmatch(r"http://([a-z0-9_-]+):(\d+)/?", source["url"])
    assert match and match.group(1) == "prometheus" and match.group(1) in SERVICES
    assert any(p.split(":")[-1] == match.group(2) for p in SERVICES["prometheus"]["ports"])
    (provider,) = providers["providers"]
    dashboards_dir = provider["options"]["path"]
    assert mounts[dashboards_dir] == (DEPLOY / "grafana" / "dashboards").resolve()
    home = SERVICES["grafana"]["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert home.startswith(dashboards_dir + "/") and (DEPLOY / "grafana" / "dashboards" / Path(home).name).is_file()
    assert DASHBOARDS
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
                if ds is not None:
                    assert ds == {"type": "prometheus", "uid": source["uid"]}, f"{path.name}: {panel['title']}"


def _families() -> list[tuple[str, str, str, str]]:
    """(exported name, type, help, app) of every metric, read back from each app's /metrics text."""
    from prometheus_client import generate_latest

    found = []
    for app, registry in (("engine", Metrics().registry), ("review", ReviewMetrics().registry)):
        families = list(text_string_to_metric_families(generate_latest(registry).decode()))
        names = {f.name for f in families}
        for family in families:
            if family.name.endswith("_created") and family.name.removesuffix("_created") in names:
                continue  # prometheus_client's creation timestamps of counters and histograms
            suffix = "_total" if family.type == "counter" else ""
            found.append((family.name + suffix, family.type, family.documentation, app))
    return found


def _exported() -> tuple[set[str], set[str]]:
    """Sample names the engine and review app export, and the histograms among them."""
    series, histograms = set(), set()
    for name, kind, _, _ in _families():
        series.add(name)
        if kind == "histogram":
            histograms.add(name)
            series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return series, histograms


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboards_query_only_metrics_that_exist():
    series, histograms = _exported()
    assert series == docs.exported_series()  # the README's table lists the same series
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        queries = _queries(dashboard)
        assert queries
        for title, expr in queries:
            names = re.findall(r"stream_al_[a-z_]+", expr)
            assert names, f"{title}: {expr} queries no stream-al series"
            for name in names:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if base != name:
                    assert base in histograms, f"{title}: {name} is not a histogram's series"
                assert name in series, f"{title}: {name} is not exported by the engine or the review app"
            for quantile in re.findall(r"histogram_quantile\([^,]+,\s*(?:sum|max) by \(le\) \(rate\((\w+)\[", expr):
                assert quantile.endswith("_bucket"), f"{title}: histogram_quantile over {quantile}"


def test_dashboard_has_the_operations_panels():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "stream-al.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all({"x", "y", "w", "h"} <= p["gridPos"].keys() for p in panels)
    for wanted, pattern in REQUIRED_PANELS.items():
        matching = [p for p in panels if wanted in p["title"].lower()]
        assert matching, f"no panel for {wanted}"
        exprs = " ".join(t["expr"] for p in matching for t in p.get("targets", []))
        assert re.search(pattern, exprs), f"panel {wanted} does not query {pattern}"
    series, _ = _exported()
    exprs = " ".join(e for _, e in _queries(dashboard))
    for name in series:  # every drift and audit series the engine exports is on the dashboard
        if re.search(r"drift|audit|model_swaps|background_model", name):
            assert name in exprs, f"{name} is exported but not on the dashboard"


# ---------------------------------------------------------------------------------------------
# README and the generated reference


def test_readme_generated_sections_are_current():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert docs.generated(readme, "configure") == docs.render_configure()
    assert docs.generated(readme, "metrics") == docs.render_metrics()
    assert docs.update(readme) == readme, "run `make docs`"
    for heading in ("## Deploy", "## Configure", "## Metrics"):
        assert f"\n{heading}\n" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^docs:.*\n\t.*python -m stream_al\.docs", makefile, re.MULTILINE)


def _schema_paths(schema: dict[str, Any], node: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Leaf and section paths of a JSON schema, with the leaf's (resolved) schema."""
    out = {}
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        refs = [prop] + prop.get("anyOf", [])
        sub = next((schema["$defs"][r["$ref"].split("/")[-1]] for r in refs if "$ref" in r), None)
        out[path] = prop
        if sub is not None and "properties" in sub:
            out.update(_schema_paths(schema, sub, path + "."))
    return out


def _is_password(prop: dict[str, Any]) -> bool:
    candidates = [prop] + prop.get("anyOf", []) + [prop.get("additionalProperties") or {}]
    return any(c.get("format") == "password" for c in candidates if isinstance(c, dict))


def test_configure_table_covers_the_settings_schema():
    schema = Settings.model_json_schema()
    paths = _schema_paths(schema, schema)
    rows = {row.path: row for row in docs.settings_rows()}
    assert set(rows) == set(paths)
    secrets = {path for path, prop in paths.items() if _is_password(prop)}
    assert secrets >= {"kafka.sasl_password", "kafka.ssl_password", "snapshots.key", "review.analysts"}
    assert {path for path, row in rows.items() if row.secret} == secrets
    table = docs.render_configure()
    for path, row in rows.items():
        line = next(l for l in table.splitlines() if f"`{path}`" in l.split("|")[1])
        assert ("**secret**" in line) == row.secret, path
        default = paths[path].get("default", ...)
        if default is not ... and not row.section:
            assert json.loads(row.default) == (list(default) if isinstance(default, tuple) else default), path


def test_metrics_table_lists_every_registered_series():
    table = docs.render_metrics()
    rows = docs.metric_rows()
    families = {name: (kind, help_text, app) for name, kind, help_text, app in _families()}
    assert {r.name: (r.type, r.help, r.app) for r in rows} == families
    for row in rows:
        assert f"| `{row.name}` | {row.type} |" in table
    labelled = {r.name: r.labels for r in rows if r.labels}
    assert labelled["stream_al_label_requests_total"] == ("reason",)
    assert labelled["stream_al_review_answers_total"] == ("kind",)
