"""Pod hardening: non-root, read-only, no privilege escalation, and privileged ports only on request."""

from __future__ import annotations

from typing import Any

import pytest

from chart_objects import Renderer, controller_container, controller_pod_spec
from render import Document

UNPRIVILEGED_PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"


def sysctls_of(documents: list[Document]) -> dict[str, str]:
    context = controller_pod_spec(documents)["securityContext"]
    return {entry["name"]: entry["value"] for entry in context.get("sysctls", [])}


def added_capabilities(documents: list[Document]) -> list[str]:
    return controller_container(documents)["securityContext"].get("capabilities", {}).get("add", [])


def test_container_security_context_hardened(default_documents: list[Document]) -> None:
    context = controller_container(default_documents)["securityContext"]

    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 65532
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]


def test_pod_security_context_hardened(default_documents: list[Document]) -> None:
    context = controller_pod_spec(default_documents)["securityContext"]

    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 65532
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "sysctls" not in context


def test_pod_shares_no_host_namespace(default_documents: list[Document]) -> None:
    spec = controller_pod_spec(default_documents)

    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(field), f"{field} must stay off"


# Each row: container ports, then the lowest port when one is below 1024 (None otherwise).
PORT_CASES: dict[str, tuple[dict[str, int], int | None]] = {
    "default ports": ({}, None),
    "http on 80": ({"http": 80}, 80),
    "https on 443": ({"https": 443}, 443),
    "both on 80 and 443": ({"http": 80, "https": 443}, 80),
    "admin on 900": ({"admin": 900}, 900),
    "http on 1024": ({"http": 1024}, None),
}


@pytest.mark.parametrize(("ports", "privileged_port"), PORT_CASES.values(), ids=PORT_CASES.keys())
def test_net_bind_service_only_below_1024(
    render_chart: Renderer, ports: dict[str, int], privileged_port: int | None
) -> None:
    documents = render_chart({"controller": {"containerPorts": ports}})

    if privileged_port is None:
        assert added_capabilities(documents) == []
        assert UNPRIVILEGED_PORT_SYSCTL not in sysctls_of(documents)
    else:
        assert added_capabilities(documents) == ["NET_BIND_SERVICE"]
        assert sysctls_of(documents)[UNPRIVILEGED_PORT_SYSCTL] == str(privileged_port)
        # Dropping ALL stays in place; only the one capability comes back.
        assert controller_container(documents)["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_user_sysctl_kept_for_privileged_port(render_chart: Renderer) -> None:
    values: dict[str, Any] = {
        "controller": {"containerPorts": {"http": 80}},
        "podSecurityContext": {
            "runAsNonRoot": True,
            "sysctls": [{"name": UNPRIVILEGED_PORT_SYSCTL, "value": "0"}],
        },
    }

    sysctls = controller_pod_spec(render_chart(values))["securityContext"]["sysctls"]

    assert sysctls == [{"name": UNPRIVILEGED_PORT_SYSCTL, "value": "0"}]


def test_user_capabilities_kept_for_privileged_port(render_chart: Renderer) -> None:
    values: dict[str, Any] = {
        "controller": {"containerPorts": {"https": 443}},
        "containerSecurityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
    }

    assert added_capabilities(render_chart(values)) == ["NET_BIND_SERVICE"]


def test_service_account_token_mounted(default_documents: list[Document]) -> None:
    # The controller reads the API server with the ServiceAccount token, so it must be mounted.
    assert controller_pod_spec(default_documents)["automountServiceAccountToken"] is True


def test_service_links_disabled(default_documents: list[Document]) -> None:
    # Service links for the Service "gangway" would add GANGWAY_* variables, the prefix the flags read.
    assert controller_pod_spec(default_documents)["enableServiceLinks"] is False
