"""The container's `gangway run` flags and environment follow the values."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from chart_objects import Renderer, command_line_flags, controller_container, environment
from render import Document

DEFAULT_FLAGS = {
    "--http-listen": "0.0.0.0:8080",
    "--https-listen": "0.0.0.0:8443",
    "--admin-listen": "0.0.0.0:9180",
    "--http-public-port": "80",
    "--https-public-port": "443",
    "--ingress-class": "gangway",
    "--controller-name": "gangway.dev/ingress-controller",
    "--log-format": "json",
    "--log-level": "info",
    "--access-log": "true",
    "--client-header-timeout": "60s",
    "--idle-timeout": "75s",
    "--upstream-connect-timeout": "5s",
    "--upstream-response-timeout": "60s",
    "--shutdown-timeout": "25s",
    "--tunnel-idle-timeout": "1h",
    "--publish-service": "gangway/gangway",
    "--leader-election-namespace": "gangway",
    "--leader-election-lease": "gangway-leader",
}


def flags_for(render_chart: Renderer, values: dict[str, Any], **options: Any) -> dict[str, str]:
    return command_line_flags(controller_container(render_chart(values, **options)))


def test_default_flags(default_documents: list[Document]) -> None:
    assert command_line_flags(controller_container(default_documents)) == DEFAULT_FLAGS


def test_flags_follow_controller_values(render_chart: Renderer) -> None:
    values = {
        "controller": {
            "containerPorts": {"http": 8000, "https": 9443, "admin": 9900},
            "controllerName": "example.com/edge",
            "workerThreads": 4,
            "logFormat": "text",
            "logLevel": "info,gangway=debug",
            "accessLog": False,
            "clientHeaderTimeout": "10s",
            "idleTimeout": "2m",
            "upstreamConnectTimeout": "500ms",
            "upstreamResponseTimeout": "1h",
            "shutdownTimeout": "20s",
            "tunnelIdleTimeout": "15m",
            "watchNamespace": "apps",
        },
        "ingressClass": {"name": "edge"},
    }

    flags = flags_for(render_chart, values)

    expected = {
        "--http-listen": "0.0.0.0:8000",
        "--https-listen": "0.0.0.0:9443",
        "--admin-listen": "0.0.0.0:9900",
        "--ingress-class": "edge",
        "--controller-name": "example.com/edge",
        "--worker-threads": "4",
        "--log-format": "text",
        "--log-level": "info,gangway=debug",
        "--access-log": "false",
        "--client-header-timeout": "10s",
        "--idle-timeout": "2m",
        "--upstream-connect-timeout": "500ms",
        "--upstream-response-timeout": "1h",
        "--shutdown-timeout": "20s",
        "--tunnel-idle-timeout": "15m",
        "--watch-namespace": "apps",
    }
    for flag, value in expected.items():
        assert flags[flag] == value, flag


def test_public_ports_follow_service_ports(render_chart: Renderer) -> None:
    flags = flags_for(render_chart, {"service": {"ports": {"http": 8081, "https": 8444}}})

    assert flags["--http-public-port"] == "8081"
    assert flags["--https-public-port"] == "8444"


def test_public_ports_override_service_ports(render_chart: Renderer) -> None:
    values = {"controller": {"httpPublicPort": 30080, "httpsPublicPort": 30443}, "service": {"type": "NodePort"}}

    flags = flags_for(render_chart, values)

    assert flags["--http-public-port"] == "30080"
    assert flags["--https-public-port"] == "30443"


def test_ipv6_bind_address_bracketed(render_chart: Renderer) -> None:
    flags = flags_for(render_chart, {"controller": {"bindAddress": "::"}})

    assert flags["--http-listen"] == "[::]:8080"
    assert flags["--https-listen"] == "[::]:8443"
    assert flags["--admin-listen"] == "[::]:9180"


def test_publish_address_replaces_publish_service(render_chart: Renderer) -> None:
    flags = flags_for(render_chart, {"controller": {"publishAddress": "lb.example.com"}})

    assert flags["--publish-address"] == "lb.example.com"
    assert "--publish-service" not in flags


def test_publish_service_override(render_chart: Renderer) -> None:
    flags = flags_for(render_chart, {"controller": {"publishService": "edge/public-lb"}})

    assert flags["--publish-service"] == "edge/public-lb"


def test_names_follow_release(render_chart: Renderer) -> None:
    flags = flags_for(render_chart, {}, release="edge", namespace="ingress")

    assert flags["--publish-service"] == "ingress/edge-gangway"
    assert flags["--leader-election-namespace"] == "ingress"
    assert flags["--leader-election-lease"] == "edge-gangway-leader"


def test_optional_flags_absent_by_default(default_documents: list[Document]) -> None:
    flags = command_line_flags(controller_container(default_documents))

    for flag in ("--worker-threads", "--watch-namespace", "--publish-address", "--kubeconfig"):
        assert flag not in flags


def test_extra_args_appended_last(render_chart: Renderer) -> None:
    # The first argument contains YAML syntax, which must survive rendering as one string.
    extra = ["--future-flag=a: b # c", "--kubeconfig", "/etc/gangway/kubeconfig"]

    args = controller_container(render_chart({"controller": {"extraArgs": extra}}))["args"]

    assert args[-3:] == extra


def test_extra_args_repeating_flag_rejected(render_chart: Renderer) -> None:
    with pytest.raises(helm.HelmRenderError, match="controller.extraArgs repeats --log-level"):
        render_chart({"controller": {"extraArgs": ["--log-level=debug"]}})


def test_pod_identity_from_downward_api(default_documents: list[Document]) -> None:
    env = environment(controller_container(default_documents))

    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_extra_env_added(render_chart: Renderer) -> None:
    extra = [
        {"name": "GANGWAY_LOG_LEVEL", "value": "debug"},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]

    env = environment(controller_container(render_chart({"controller": {"extraEnv": extra}})))

    assert env["GANGWAY_LOG_LEVEL"] == extra[0]
    assert env["NODE_NAME"] == extra[1]
    assert "POD_NAME" in env
