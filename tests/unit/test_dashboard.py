"""Deployment files agree with the code: each metric the Grafana dashboard and the Prometheus alerts
query is defined in sharevault/metrics.py, with the labels they group by; compose is valid."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

import sharevault.metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sharevault.json"
NAME = re.compile(r"\bsharevault_[a-z0-9_]+")
BY = re.compile(r"\bby \(([^)]*)\)")
# Samples each metric type exposes, by suffix (prometheus_client adds _total to counters).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
}


def defined_wrappers() -> list[MetricWrapperBase]:
    return [m for m in vars(sharevault.metrics).values() if isinstance(m, MetricWrapperBase)]


def defined() -> dict[str, tuple[str, ...]]:
    """Every sample name the code can expose → the labels of its metric."""
    samples = {}
    for metric in defined_wrappers():
        # prometheus_client keeps name, type and label names on the wrapper only.
        for suffix in SUFFIXES[str(metric._type)]:
            samples[metric._name + suffix] = tuple(metric._labelnames)
    return samples


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def alert_queries() -> list[str]:
    # Each `expr:` of deploy/alerts.yml, folded (`>`) ones included, without a YAML parser.
    text = (DEPLOY / "alerts.yml").read_text()
    found = re.findall(r"expr: >\n((?:\s{10}.*\n)+)|expr: (.*)\n", text)
    return [" ".join((folded or line).split()) for folded, line in found]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_queried_metric_and_grouping_label_exists(source: str) -> None:
    queries = dashboard_queries() if source == "dashboard" else alert_queries()
    assert len(queries) >= (20 if source == "dashboard" else 7)
    samples = defined()
    for query in queries:
        names = NAME.findall(query)
        assert names or "up{" in query, f"queries no sharevault metric: {query}"
        unknown = [n for n in names if n not in samples]
        assert not unknown, f"not defined in sharevault/metrics.py: {unknown} in {query}"
        labels = {label for n in names for label in samples[n]} | {"le"}
        for group in BY.findall(query):
            grouped = {g.strip() for g in group.split(",") if g.strip()}
            assert grouped <= labels, f"{query}: grouped by {grouped - labels}, not a label"


def test_dashboard_shows_every_metric_and_uses_the_provisioned_datasource() -> None:
    board = dashboard()
    queried = {n for q in dashboard_queries() for n in NAME.findall(q)}
    families = {metric._name for metric in defined_wrappers()}
    missing = {f for f in families if not any(q.startswith(f) for q in queried)}
    assert not missing, f"metrics no panel shows: {missing}"
    provisioned = (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    uid = re.search(r"^\s+uid: (\S+)$", provisioned, re.MULTILINE)
    assert uid is not None
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert {p["datasource"]["uid"] for p in panels} == {uid[1]}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "Grafana needs unique panel ids"
    assert board["uid"] and board["title"]
