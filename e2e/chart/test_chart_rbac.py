"""Least-privilege RBAC: reads where the controller watches, writes only to Ingress status, Events and its Lease."""

from __future__ import annotations

from typing import Any

import pytest

from chart_objects import Renderer, objects_of_kind, only_object, role_permissions, rules_of
from render import Document

READ_VERBS = {"get", "list", "watch"}

# Every (apiGroup, resource, verb) the controller may write with.
ALLOWED_WRITES = {
    ("networking.k8s.io", "ingresses/status", "patch"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
}

# The objects the controller watches in every namespace it serves.
NAMESPACED_READS = {
    ("networking.k8s.io", "ingresses"),
    ("", "services"),
    ("", "secrets"),
    ("discovery.k8s.io", "endpointslices"),
}

ROLE_KINDS = ("ClusterRole", "Role")

VALUE_SETS: dict[str, dict[str, Any] | None] = {
    "all namespaces": None,
    "one other namespace": {"controller": {"watchNamespace": "apps"}},
    "the release namespace": {"controller": {"watchNamespace": "gangway"}},
}


def all_roles(documents: list[Document]) -> list[dict[str, Any]]:
    return [role for kind in ROLE_KINDS for role in objects_of_kind(documents, kind)]


def reads_of(role: dict[str, Any]) -> set[tuple[str, str]]:
    permissions = role_permissions(role)
    return {(group, resource) for group, resource, _ in permissions if all((group, resource, verb) in permissions for verb in READ_VERBS)}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rbac_has_no_wildcard(render_chart: Renderer, values: dict[str, Any] | None) -> None:
    for role in all_roles(render_chart(values)):
        for rule in rules_of(role):
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{role['kind']} {role['metadata']['name']} has * in {field}"
            assert "nonResourceURLs" not in rule


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rbac_writes_only_status_events_leases(render_chart: Renderer, values: dict[str, Any] | None) -> None:
    for role in all_roles(render_chart(values)):
        writes = {permission for permission in role_permissions(role) if permission[2] not in READ_VERBS}

        assert writes <= ALLOWED_WRITES, f"{role['kind']} {role['metadata']['name']} may also write {writes - ALLOWED_WRITES}"


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rbac_reads_no_other_kind(render_chart: Renderer, values: dict[str, Any] | None) -> None:
    allowed = NAMESPACED_READS | {("networking.k8s.io", "ingressclasses"), ("coordination.k8s.io", "leases")}
    for role in all_roles(render_chart(values)):
        readable = {(group, resource) for group, resource, verb in role_permissions(role) if verb in READ_VERBS}

        assert readable <= allowed, f"{role['kind']} {role['metadata']['name']} may also read {readable - allowed}"


def test_cluster_role_covers_all_namespaces(default_documents: list[Document]) -> None:
    cluster_role = only_object(default_documents, "ClusterRole")

    assert reads_of(cluster_role) == NAMESPACED_READS | {("networking.k8s.io", "ingressclasses")}
    assert ("networking.k8s.io", "ingresses", "update") not in role_permissions(cluster_role)
    assert ("networking.k8s.io", "ingresses/status", "patch") in role_permissions(cluster_role)
    assert ("networking.k8s.io", "ingresses/status", "update") not in role_permissions(cluster_role)
    assert ("events.k8s.io", "events", "create") in role_permissions(cluster_role)
    assert ("events.k8s.io", "events", "patch") in role_permissions(cluster_role)
    # Cluster mode sends Events through events.k8s.io only.
    assert ("", "events", "create") not in role_permissions(cluster_role)


def test_lease_access_limited_to_own_lease(default_documents: list[Document]) -> None:
    role = only_object(default_documents, "Role")
    lease_rules = [rule for rule in rules_of(role) if rule["resources"] == ["leases"]]

    named = [rule for rule in lease_rules if rule.get("resourceNames")]
    unnamed = [rule for rule in lease_rules if not rule.get("resourceNames")]
    assert role["metadata"]["namespace"] == "gangway"
    assert [rule["resourceNames"] for rule in named] == [["gangway-leader"]]
    assert sorted(named[0]["verbs"]) == ["get", "update"]
    # RBAC cannot limit create to a name, since the object does not exist yet.
    assert [rule["verbs"] for rule in unnamed] == [["create"]]


def test_custom_lease_name_in_role(render_chart: Renderer) -> None:
    documents = render_chart({"controller": {"leaderElection": {"leaseName": "edge-lock"}}})

    role = only_object(documents, "Role")
    assert ["edge-lock"] in [rule.get("resourceNames") for rule in rules_of(role)]


def test_watch_namespace_moves_rules_to_role(render_chart: Renderer) -> None:
    documents = render_chart({"controller": {"watchNamespace": "apps"}})

    cluster_role = only_object(documents, "ClusterRole")
    assert role_permissions(cluster_role) == {("networking.k8s.io", "ingressclasses", verb) for verb in READ_VERBS}

    watched = [role for role in objects_of_kind(documents, "Role") if role["metadata"]["namespace"] == "apps"]
    assert len(watched) == 1
    assert reads_of(watched[0]) == NAMESPACED_READS
    assert ("networking.k8s.io", "ingresses/status", "patch") in role_permissions(watched[0])
    assert ("events.k8s.io", "events", "create") in role_permissions(watched[0])

    # The published Service lives in the release namespace, outside "apps".
    release_role = [role for role in objects_of_kind(documents, "Role") if role["metadata"]["namespace"] == "gangway"]
    assert len(release_role) == 1
    assert ("", "services") in reads_of(release_role[0])
    assert ("", "secrets") not in reads_of(release_role[0])


def test_watch_namespace_binds_role_to_service_account(render_chart: Renderer) -> None:
    documents = render_chart({"controller": {"watchNamespace": "apps"}})

    binding = [item for item in objects_of_kind(documents, "RoleBinding") if item["metadata"]["namespace"] == "apps"]
    assert len(binding) == 1
    assert binding[0]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gangway"}
    assert binding[0]["subjects"] == [{"kind": "ServiceAccount", "name": "gangway", "namespace": "gangway"}]


def test_release_namespace_watch_uses_one_role(render_chart: Renderer) -> None:
    documents = render_chart({"controller": {"watchNamespace": "gangway"}})

    roles = objects_of_kind(documents, "Role")
    assert len(roles) == 1
    assert reads_of(roles[0]) == NAMESPACED_READS
    assert ("coordination.k8s.io", "leases", "create") in role_permissions(roles[0])


def test_publish_address_needs_no_service_read(render_chart: Renderer) -> None:
    documents = render_chart({"controller": {"watchNamespace": "apps", "publishAddress": "203.0.113.7"}})

    roles = [role for role in objects_of_kind(documents, "Role") if role["metadata"]["namespace"] == "gangway"]
    assert len(roles) == 1
    readable = {(group, resource) for group, resource, _ in role_permissions(roles[0])}
    assert ("", "services") not in readable


def test_bindings_name_chart_service_account(default_documents: list[Document]) -> None:
    subject = {"kind": "ServiceAccount", "name": "gangway", "namespace": "gangway"}

    assert only_object(default_documents, "ClusterRoleBinding")["subjects"] == [subject]
    assert only_object(default_documents, "RoleBinding")["subjects"] == [subject]
    assert only_object(default_documents, "ServiceAccount")["metadata"]["name"] == "gangway"


def test_rbac_create_false_renders_no_rbac(render_chart: Renderer) -> None:
    documents = render_chart({"rbac": {"create": False}})

    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert objects_of_kind(documents, kind) == []
