"""deploy/grafana/ (the dashboard) and deploy/prometheus/ (the alert rules): they parse,
promtool accepts them and their tests, and every metric and label they name is one a
real gateway's ``/metrics`` has."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from gateway.metrics import Metrics
from tests.support.gateway import MakeKey
from tests.support.paths import ROOT
from tests.support.processes import post, running_gateway
from tests.support.tools import tool

DASHBOARD = ROOT / "deploy" / "grafana" / "gateway.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"

#: Labels Prometheus adds when it scrapes (job, instance) or that histograms have (le).
SCRAPE_LABELS = {"job", "instance", "le"}
_SELECTOR = re.compile(r"\b(gateway_[a-z0-9_]+)\b(?:\s*\{([^}]*)\})?")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ANNOTATION_LABEL = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def graph_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def queries() -> list[tuple[str, str]]:
    """``(where, PromQL)`` of every dashboard target and alert rule."""
    found = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in graph_panels()
        for target in panel["targets"]
    ]
    found += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    return found


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables given values, as Prometheus runs it."""
    return expr.replace("$__rate_interval", "5m").replace("$job", ".*")


def grouped_labels(expr: str) -> set[str]:
    """The labels of every ``by (...)`` / ``without (...)`` in ``expr``."""
    return {label.strip() for labels in _GROUPING.findall(expr) for label in labels.split(",")}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


# -- what Prometheus and Grafana will read -------------------------------------------------


def test_alert_rules_are_complete():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert set(names) >= {
        "GatewayHighErrorRatio",
        "GatewayBreakerOpen",
        "GatewayUsageFlushLagging",
        "GatewayRedisDown",
        "GatewayJobQueueGrowing",
    }
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_the_dashboard_is_well_formed():
    board = dashboard()
    assert board["uid"] == "image-gateway"
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "job"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
    for panel in graph_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], panel["title"]
            grouped = grouped_labels(target["expr"])
            for label in _LEGEND_LABEL.findall(target["legendFormat"]):
                assert label in grouped, f"{panel['title']}: legend {{{{{label}}}}}"


def test_alert_annotations_name_only_labels_the_alert_has():
    for rule in alert_rules():
        grouped = grouped_labels(rule["expr"])
        text = " ".join(rule["annotations"].values())
        for label in _ANNOTATION_LABEL.findall(text):
            assert label in grouped, f"{rule['alert']}: $labels.{label}"


def test_promtool_accepts_the_rules_and_their_tests_pass():
    promtool = tool("promtool")
    checked = run(promtool, "check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path):
    """promtool checks each query's syntax as a recording rule's expression."""
    promtool = tool("promtool")
    rules = [
        {"record": f"dashboard:query_{i}", "expr": as_promql(target["expr"])}
        for i, target in enumerate(t for panel in graph_panels() for t in panel["targets"])
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the names: what a real gateway exposes ------------------------------------------------


def exposed_names(text: str) -> set[str]:
    """Every series name of a ``/metrics`` answer, from its samples and its TYPE lines
    (a labelled metric with no sample yet still has its TYPE line)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "histogram":
                names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
            elif kind == "counter":  # prometheus_client names it with its _total
                names.add(name if name.endswith("_total") else f"{name}_total")
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def defined_labels() -> dict[str, set[str]]:
    """Series name -> its labels, from the gateway's metric definitions."""
    metrics = Metrics()
    labels: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        own = set(metric._labelnames)
        kind = metric._type
        if kind == "counter":
            labels[f"{metric._name}_total"] = own
        elif kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                labels[metric._name + suffix] = own | ({"le"} if suffix == "_bucket" else set())
        else:
            labels[metric._name] = own
    return labels


@pytest.mark.slow
async def test_every_metric_named_is_one_a_real_gateway_exposes(
    tmp_path: Path, raw_config: dict[str, Any], make_key: MakeKey
):
    key = await make_key()
    async with (
        running_gateway(tmp_path, raw_config) as (url, _process),
        aiohttp.ClientSession() as session,
    ):
        assert await post(session, url, key.key) == 200
        async with session.get(f"{url}/metrics") as response:
            assert response.status == 200
            exposed = exposed_names(await response.text())
    labels = defined_labels()
    assert "gateway_requests_total" in exposed  # the parsing itself works

    used: set[str] = set()
    for where, expr in queries():
        selectors = _SELECTOR.findall(expr)
        assert selectors, f"{where}: no gateway metric"
        known = set(SCRAPE_LABELS)
        for name, matchers in selectors:
            used.add(name)
            assert name in exposed, f"{where}: {name} is not in /metrics"
            known |= labels[name]
            for label in _MATCHER.findall(matchers):
                assert label in labels[name] | SCRAPE_LABELS, f"{where}: {name} has no {label}"
        for label in grouped_labels(expr):
            assert label in known, f"{where}: no metric there has the label {label}"
    # What the dashboard promises to show (traffic, errors, latency, upstreams and
    # breakers, admissions, the queue, the flush lag, Redis and Postgres errors).
    assert used >= {
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_upstream_calls_total",
        "gateway_breaker_state",
        "gateway_admissions_total",
        "gateway_job_queue_depth",
        "gateway_usage_flush_lag_seconds",
        "gateway_dependency_errors_total",
    }
