"""Objects the chart renders with default and custom values, checked against Kubernetes' own schemas."""

from __future__ import annotations

from collections import Counter
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from chart_objects import (
    CLUSTER_SCOPED_KINDS,
    Renderer,
    controller_container,
    controller_pod_spec,
    objects_of_kind,
    only_object,
)
from render import Document

DEFAULT_KINDS = Counter(
    {
        "PodDisruptionBudget": 1,
        "ServiceAccount": 1,
        "ClusterRole": 1,
        "ClusterRoleBinding": 1,
        "Role": 1,
        "RoleBinding": 1,
        "Service": 2,
        "Deployment": 1,
        "IngressClass": 1,
    }
)

# The chart's minimum Kubernetes version (Chart.yaml kubeVersion) and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

# ServiceMonitor comes from the Prometheus Operator, whose schema kubernetes-validate does not ship.
KINDS_WITHOUT_SCHEMA = {"ServiceMonitor"}

VALUE_SETS: dict[str, dict[str, Any] | None] = {
    "default values": None,
    "every optional object": {
        "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 75},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "ingressClass": {"default": True, "annotations": {"example.com/team": "edge"}},
        "podDisruptionBudget": {"minAvailable": None, "maxUnavailable": "25%"},
    },
    "one watched namespace": {"controller": {"watchNamespace": "apps"}},
    "node ports and privileged container ports": {
        "service": {"type": "NodePort", "nodePorts": {"http": 30080, "https": 30443}, "externalTrafficPolicy": "Local"},
        "controller": {"containerPorts": {"http": 80, "https": 443}},
    },
    "scheduling settings": {
        "podAntiAffinity": "hard",
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}],
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ingress", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "image": {"pullSecrets": ["registry", {"name": "mirror"}]},
    },
}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_objects_match_kubernetes_schema(render_chart: Renderer, values: dict[str, Any] | None, version: str) -> None:
    for document in render_chart(values):
        if document.kind in KINDS_WITHOUT_SCHEMA:
            continue
        # Strict schemas reject unknown fields, so a misspelt field fails here.
        kubernetes_validate.validate(document.object, version, strict=True)


def test_default_render_kinds(default_documents: list[Document]) -> None:
    assert Counter(document.kind for document in default_documents) == DEFAULT_KINDS


def test_default_render_namespaces(default_documents: list[Document]) -> None:
    for document in default_documents:
        metadata = document.object["metadata"]
        if document.kind in CLUSTER_SCOPED_KINDS:
            assert "namespace" not in metadata, f"{document.kind} {metadata['name']} is cluster-scoped"
        else:
            assert metadata["namespace"] == "gangway", f"{document.kind} {metadata['name']}"


def test_default_render_labels(default_documents: list[Document]) -> None:
    for document in default_documents:
        labels = document.object["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "gangway"
        assert labels["app.kubernetes.io/instance"] == "gangway"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_fullname_prefixed_by_release(render_chart: Renderer) -> None:
    documents = render_chart(release="edge", namespace="ingress")

    assert only_object(documents, "Deployment")["metadata"]["name"] == "edge-gangway"
    assert only_object(documents, "Service", "edge-gangway")["metadata"]["namespace"] == "ingress"


def test_fullname_override(render_chart: Renderer) -> None:
    documents = render_chart({"fullnameOverride": "front-door"})

    assert only_object(documents, "Deployment")["metadata"]["name"] == "front-door"
    assert only_object(documents, "ServiceAccount")["metadata"]["name"] == "front-door"


def test_deployment_defaults(default_documents: list[Document]) -> None:
    deployment = only_object(default_documents, "Deployment")

    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()


def test_recreate_strategy_drops_rolling_update(render_chart: Renderer) -> None:
    deployment = only_object(render_chart({"updateStrategy": {"type": "Recreate"}}), "Deployment")

    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_image_tag_defaults_to_app_version(default_documents: list[Document], chart: helm.Chart) -> None:
    image = controller_container(default_documents)["image"]

    assert image == f"ghcr.io/gangway-dev/gangway:{chart.metadata['appVersion']}"


def test_image_digest_wins_over_tag(render_chart: Renderer) -> None:
    digest = "sha256:" + "ab" * 32

    container = controller_container(render_chart({"image": {"tag": "9.9.9", "digest": digest, "pullPolicy": "Always"}}))

    assert container["image"] == f"ghcr.io/gangway-dev/gangway@{digest}"
    assert container["imagePullPolicy"] == "Always"


def test_pull_secrets_accept_names_and_objects(render_chart: Renderer) -> None:
    spec = controller_pod_spec(render_chart({"image": {"pullSecrets": ["registry", {"name": "mirror"}]}}))

    assert spec["imagePullSecrets"] == [{"name": "registry"}, {"name": "mirror"}]


def test_container_ports(default_documents: list[Document]) -> None:
    ports = {port["name"]: port["containerPort"] for port in controller_container(default_documents)["ports"]}

    assert ports == {"http": 8080, "https": 8443, "admin": 9180}


def test_probes_on_admin_port(default_documents: list[Document]) -> None:
    container = controller_container(default_documents)

    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin", "scheme": "HTTP"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin", "scheme": "HTTP"}


def test_probe_timing_from_values(render_chart: Renderer) -> None:
    container = controller_container(render_chart({"readinessProbe": {"periodSeconds": 2, "failureThreshold": 10}}))

    assert container["readinessProbe"]["periodSeconds"] == 2
    assert container["readinessProbe"]["failureThreshold"] == 10
    assert container["readinessProbe"]["timeoutSeconds"] == 2


def test_termination_outlasts_prestop_and_drain(default_documents: list[Document]) -> None:
    spec = controller_pod_spec(default_documents)
    sleep_seconds = controller_container(default_documents)["lifecycle"]["preStop"]["sleep"]["seconds"]

    assert sleep_seconds == 5
    assert spec["terminationGracePeriodSeconds"] > sleep_seconds + 25


# Each row: values that leave no time for draining, then the number the error must name.
SHORT_GRACE_PERIODS: dict[str, tuple[dict[str, Any], str]] = {
    "grace equal to sleep plus drain": ({"terminationGracePeriodSeconds": 30}, "(30)"),
    "drain in minutes": ({"controller": {"shutdownTimeout": "1m"}}, "(1m)"),
    "drain in milliseconds rounds up": (
        {"terminationGracePeriodSeconds": 6, "controller": {"shutdownTimeout": "500ms"}, "preStop": {"sleepSeconds": 5}},
        "(500ms)",
    ),
}


@pytest.mark.parametrize(("values", "named"), SHORT_GRACE_PERIODS.values(), ids=SHORT_GRACE_PERIODS.keys())
def test_short_grace_period_rejected(render_chart: Renderer, values: dict[str, Any], named: str) -> None:
    with pytest.raises(helm.HelmRenderError) as raised:
        render_chart(values)

    assert "terminationGracePeriodSeconds" in str(raised.value)
    assert named in str(raised.value)


def test_prestop_disabled_frees_grace_period(render_chart: Renderer) -> None:
    documents = render_chart({"preStop": {"enabled": False}, "terminationGracePeriodSeconds": 30})

    assert "lifecycle" not in controller_container(documents)
    assert controller_pod_spec(documents)["terminationGracePeriodSeconds"] == 30


def test_soft_anti_affinity_by_default(default_documents: list[Document]) -> None:
    affinity = controller_pod_spec(default_documents)["affinity"]

    terms = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert len(terms) == 1
    assert terms[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == (
        only_object(default_documents, "Deployment")["spec"]["selector"]["matchLabels"]
    )


def test_hard_anti_affinity(render_chart: Renderer) -> None:
    affinity = controller_pod_spec(render_chart({"podAntiAffinity": "hard"}))["affinity"]

    assert list(affinity["podAntiAffinity"]) == ["requiredDuringSchedulingIgnoredDuringExecution"]


def test_no_anti_affinity(render_chart: Renderer) -> None:
    assert "affinity" not in controller_pod_spec(render_chart({"podAntiAffinity": "none"}))


def test_custom_affinity_replaces_preset(render_chart: Renderer) -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "edge", "operator": "Exists"}]}]
            }
        }
    }

    assert controller_pod_spec(render_chart({"affinity": affinity}))["affinity"] == affinity


def test_topology_spread_gets_selector(render_chart: Renderer) -> None:
    constraints = [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
        {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"custom": "yes"}}},
    ]

    documents = render_chart({"topologySpreadConstraints": constraints})

    rendered = controller_pod_spec(documents)["topologySpreadConstraints"]
    selector = only_object(documents, "Deployment")["spec"]["selector"]
    assert rendered[0]["labelSelector"] == selector
    assert rendered[1]["labelSelector"] == {"matchLabels": {"custom": "yes"}}


def test_scheduling_values_passed_through(render_chart: Renderer) -> None:
    tolerations = [{"key": "dedicated", "operator": "Equal", "value": "ingress", "effect": "NoSchedule"}]
    values = {
        "tolerations": tolerations,
        "nodeSelector": {"node-role.example.com/edge": "true"},
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"example.com/scrape": "true"},
        "podLabels": {"team": "edge"},
    }

    documents = render_chart(values)

    spec = controller_pod_spec(documents)
    template_metadata = only_object(documents, "Deployment")["spec"]["template"]["metadata"]
    assert spec["tolerations"] == tolerations
    # Helm merges maps, so the default kubernetes.io/os selector stays.
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", "node-role.example.com/edge": "true"}
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert template_metadata["annotations"] == {"example.com/scrape": "true"}
    assert template_metadata["labels"]["team"] == "edge"


def test_service_defaults(default_documents: list[Document]) -> None:
    service = only_object(default_documents, "Service", "gangway")

    assert service["spec"]["type"] == "LoadBalancer"
    ports = {port["name"]: (port["port"], port["targetPort"]) for port in service["spec"]["ports"]}
    assert ports == {"http": (80, "http"), "https": (443, "https")}
    assert service["spec"]["selector"] == only_object(default_documents, "Deployment")["spec"]["selector"]["matchLabels"]
    assert "externalTrafficPolicy" not in service["spec"]


def test_service_load_balancer_settings(render_chart: Renderer) -> None:
    values = {
        "service": {
            "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
            "externalTrafficPolicy": "Local",
            "loadBalancerClass": "service.k8s.aws/nlb",
            "loadBalancerIP": "203.0.113.10",
            "loadBalancerSourceRanges": ["198.51.100.0/24"],
            "nodePorts": {"http": 30080},
            "ipFamilyPolicy": "PreferDualStack",
            "ipFamilies": ["IPv4", "IPv6"],
        }
    }

    service = only_object(render_chart(values), "Service", "gangway")

    spec = service["spec"]
    assert service["metadata"]["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["loadBalancerClass"] == "service.k8s.aws/nlb"
    assert spec["loadBalancerIP"] == "203.0.113.10"
    assert spec["loadBalancerSourceRanges"] == ["198.51.100.0/24"]
    assert spec["ports"][0]["nodePort"] == 30080
    assert "nodePort" not in spec["ports"][1]
    assert spec["ipFamilyPolicy"] == "PreferDualStack"
    assert spec["ipFamilies"] == ["IPv4", "IPv6"]


def test_cluster_ip_service_drops_external_fields(render_chart: Renderer) -> None:
    values = {
        "service": {
            "type": "ClusterIP",
            "externalTrafficPolicy": "Local",
            "loadBalancerClass": "example",
            "nodePorts": {"http": 30080, "https": 30443},
        }
    }

    spec = only_object(render_chart(values), "Service", "gangway")["spec"]

    assert spec["type"] == "ClusterIP"
    assert "externalTrafficPolicy" not in spec
    assert "loadBalancerClass" not in spec
    assert all("nodePort" not in port for port in spec["ports"])


def test_ingress_class_defaults(default_documents: list[Document]) -> None:
    ingress_class = only_object(default_documents, "IngressClass")

    assert ingress_class["metadata"]["name"] == "gangway"
    assert ingress_class["spec"] == {"controller": "gangway.dev/ingress-controller"}
    assert "ingressclass.kubernetes.io/is-default-class" not in ingress_class["metadata"].get("annotations", {})


def test_ingress_class_marked_default(render_chart: Renderer) -> None:
    ingress_class = only_object(render_chart({"ingressClass": {"default": True}}), "IngressClass")

    assert ingress_class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"


def test_ingress_class_not_created(render_chart: Renderer) -> None:
    assert objects_of_kind(render_chart({"ingressClass": {"create": False}}), "IngressClass") == []


def test_ingress_class_follows_controller_name(render_chart: Renderer) -> None:
    documents = render_chart({"ingressClass": {"name": "edge"}, "controller": {"controllerName": "example.com/edge"}})

    ingress_class = only_object(documents, "IngressClass")
    assert ingress_class["metadata"]["name"] == "edge"
    assert ingress_class["spec"]["controller"] == "example.com/edge"


def test_service_account_not_created(render_chart: Renderer) -> None:
    documents = render_chart({"serviceAccount": {"create": False, "name": "shared"}})

    assert objects_of_kind(documents, "ServiceAccount") == []
    assert controller_pod_spec(documents)["serviceAccountName"] == "shared"
    assert only_object(documents, "ClusterRoleBinding")["subjects"][0]["name"] == "shared"


def test_notes_name_address_and_class(chart: helm.Chart) -> None:
    notes = chart.render(None, name="gangway", namespace="gangway")["gangway/templates/NOTES.txt"]

    assert "rollout status deployment/gangway" in notes
    assert "get service gangway" in notes
    assert "ingressClassName: gangway" in notes
    assert "http://gangway-metrics.gangway.svc:9180/metrics" in notes
