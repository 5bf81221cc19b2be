"""Optional objects: PodDisruptionBudget, HorizontalPodAutoscaler, metrics Service and ServiceMonitor."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from chart_objects import Renderer, objects_of_kind, only_object
from render import Document

# Each row: values, then whether a PodDisruptionBudget is rendered.
BUDGET_CASES: dict[str, tuple[dict[str, Any], bool]] = {
    "two replicas": ({}, True),
    "one replica": ({"replicas": 1}, False),
    "budget disabled": ({"podDisruptionBudget": {"enabled": False}}, False),
    "autoscaler from two": ({"replicas": 1, "autoscaling": {"enabled": True, "minReplicas": 2}}, True),
    "autoscaler from one": ({"autoscaling": {"enabled": True, "minReplicas": 1}}, False),
}


@pytest.mark.parametrize(("values", "rendered"), BUDGET_CASES.values(), ids=BUDGET_CASES.keys())
def test_budget_only_with_several_replicas(render_chart: Renderer, values: dict[str, Any], rendered: bool) -> None:
    budgets = objects_of_kind(render_chart(values), "PodDisruptionBudget")

    assert len(budgets) == (1 if rendered else 0)


def test_budget_defaults(default_documents: list[Document]) -> None:
    budget = only_object(default_documents, "PodDisruptionBudget")

    assert budget["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in budget["spec"]
    assert budget["spec"]["selector"] == only_object(default_documents, "Deployment")["spec"]["selector"]


def test_budget_max_unavailable(render_chart: Renderer) -> None:
    budget = only_object(
        render_chart({"podDisruptionBudget": {"minAvailable": None, "maxUnavailable": "25%"}}), "PodDisruptionBudget"
    )

    assert budget["spec"]["maxUnavailable"] == "25%"
    assert "minAvailable" not in budget["spec"]


def test_budget_both_bounds_rejected(render_chart: Renderer) -> None:
    with pytest.raises(helm.HelmRenderError, match="minAvailable and podDisruptionBudget.maxUnavailable are both set"):
        render_chart({"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}})


def test_autoscaler_off_by_default(default_documents: list[Document]) -> None:
    assert objects_of_kind(default_documents, "HorizontalPodAutoscaler") == []


def test_autoscaler_replaces_replicas(render_chart: Renderer) -> None:
    values = {
        "autoscaling": {
            "enabled": True,
            "minReplicas": 3,
            "maxReplicas": 7,
            "targetCPUUtilizationPercentage": 60,
            "targetMemoryUtilizationPercentage": 70,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        }
    }

    documents = render_chart(values)

    autoscaler = only_object(documents, "HorizontalPodAutoscaler")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gangway"}
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (3, 7)
    targets = {metric["resource"]["name"]: metric["resource"]["target"]["averageUtilization"] for metric in autoscaler["spec"]["metrics"]}
    assert targets == {"cpu": 60, "memory": 70}
    assert autoscaler["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}
    # The autoscaler owns the replica count, so the Deployment must not reset it on upgrade.
    assert "replicas" not in only_object(documents, "Deployment")["spec"]


def test_autoscaler_without_metric_rejected(render_chart: Renderer) -> None:
    values = {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}

    with pytest.raises(helm.HelmRenderError, match="targetCPUUtilizationPercentage or"):
        render_chart(values)


def test_autoscaler_inverted_bounds_rejected(render_chart: Renderer) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"minReplicas \(5\) exceeds autoscaling.maxReplicas \(3\)"):
        render_chart({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}})


def test_metrics_service_by_default(default_documents: list[Document]) -> None:
    service = only_object(default_documents, "Service", "gangway-metrics")

    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9180, "targetPort": "admin", "protocol": "TCP", "appProtocol": "http"}
    ]
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"


def test_metrics_service_disabled(render_chart: Renderer) -> None:
    documents = render_chart({"metrics": {"service": {"enabled": False}}})

    assert [item["metadata"]["name"] for item in objects_of_kind(documents, "Service")] == ["gangway"]


def test_service_monitor_off_by_default(default_documents: list[Document]) -> None:
    assert objects_of_kind(default_documents, "ServiceMonitor") == []


def test_service_monitor_scrapes_metrics_service(render_chart: Renderer) -> None:
    values = {
        "metrics": {
            "serviceMonitor": {
                "enabled": True,
                "namespace": "monitoring",
                "labels": {"release": "prometheus"},
                "interval": "15s",
                "scrapeTimeout": "10s",
            }
        }
    }

    documents = render_chart(values)

    monitor = only_object(documents, "ServiceMonitor")
    metrics_service = only_object(documents, "Service", "gangway-metrics")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["gangway"]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_service["metadata"]["labels"].items()
    # The public Service must not match, or Prometheus would scrape the proxy ports.
    public_service = only_object(documents, "Service", "gangway")
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= public_service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "15s", "scrapeTimeout": "10s"}
    ]


def test_service_monitor_needs_metrics_service(render_chart: Renderer) -> None:
    values = {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}

    with pytest.raises(helm.HelmRenderError, match="needs metrics.service.enabled"):
        render_chart(values)
