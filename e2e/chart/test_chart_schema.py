"""values.schema.json rejects bad values with Helm's own error, before any template runs."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from chart_objects import Renderer

# Each row: values, then a fragment of Helm's message that names the offending key.
REJECTED: dict[str, tuple[dict[str, Any], str]] = {
    "replicas as a string": ({"replicas": "two"}, "at '/replicas': got string, want integer"),
    "negative replicas": ({"replicas": -1}, "/replicas"),
    "misspelt top-level key": ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed"),
    "unknown service key": ({"service": {"typo": True}}, "additional properties 'typo' not allowed"),
    "unknown controller key": ({"controller": {"logformat": "json"}}, "additional properties 'logformat' not allowed"),
    "log format outside the enum": ({"controller": {"logFormat": "xml"}}, "at '/controller/logFormat'"),
    "service type outside the enum": ({"service": {"type": "Ingress"}}, "at '/service/type'"),
    "pull policy outside the enum": ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    "anti-affinity preset outside the enum": ({"podAntiAffinity": "medium"}, "at '/podAntiAffinity'"),
    "duration without a unit": ({"controller": {"idleTimeout": "75"}}, "at '/controller/idleTimeout'"),
    "duration as a number": ({"controller": {"shutdownTimeout": 25}}, "at '/controller/shutdownTimeout'"),
    "port out of range": ({"controller": {"containerPorts": {"http": 70000}}}, "at '/controller/containerPorts/http'"),
    "service port as a string": ({"service": {"ports": {"https": "443"}}}, "at '/service/ports/https'"),
    "access log as a string": ({"controller": {"accessLog": "yes"}}, "at '/controller/accessLog'"),
    "watch namespace with capitals": ({"controller": {"watchNamespace": "Apps"}}, "at '/controller/watchNamespace'"),
    "publish service without a namespace": ({"controller": {"publishService": "gangway"}}, "/controller/publishService"),
    "label value as a number": ({"podLabels": {"tier": 1}}, "at '/podLabels/tier'"),
    "extra argument as a number": ({"controller": {"extraArgs": [1]}}, "at '/controller/extraArgs/0'"),
    "budget as a bad percentage": ({"podDisruptionBudget": {"minAvailable": "half"}}, "/podDisruptionBudget/minAvailable"),
    "image digest not sha256": ({"image": {"digest": "md5:abc"}}, "at '/image/digest'"),
}

ACCEPTED: dict[str, dict[str, Any]] = {
    "budget as a percentage": {"podDisruptionBudget": {"minAvailable": "50%"}},
    "pull secret as a name": {"image": {"pullSecrets": ["registry"]}},
    "pull secret as an object": {"image": {"pullSecrets": [{"name": "registry"}]}},
    "millisecond duration": {"controller": {"upstreamConnectTimeout": "500ms"}},
    "debug directives": {"controller": {"logLevel": "info,gangway=debug"}},
    "values from a parent chart": {"global": {"imageRegistry": "registry.example"}},
}


@pytest.mark.parametrize(("values", "message"), REJECTED.values(), ids=REJECTED.keys())
def test_schema_rejects_bad_value(render_chart: Renderer, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as raised:
        render_chart(values)

    assert "values don't meet the specifications of the schema" in str(raised.value)
    assert message in str(raised.value)


@pytest.mark.parametrize("values", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_schema_accepts_valid_value(render_chart: Renderer, values: dict[str, Any]) -> None:
    documents = render_chart(values)

    assert any(document.kind == "Deployment" for document in documents)


def test_schema_accepts_default_values(chart: helm.Chart) -> None:
    chart.validate_schema(chart.values)
