"""Lookups in the rendered objects of the Gangway chart, shared by the chart tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from render import Document

# The `render_chart` fixture: values (and render options) in, objects in install order out.
Renderer = Callable[..., list[Document]]

CLUSTER_SCOPED_KINDS = {"ClusterRole", "ClusterRoleBinding", "IngressClass", "Namespace"}


def objects_of_kind(documents: list[Document], kind: str) -> list[dict[str, Any]]:
    """Return the objects of one kind, in install order."""
    return [document.object for document in documents if document.kind == kind]


def only_object(documents: list[Document], kind: str, name: str | None = None) -> dict[str, Any]:
    """Return the single object of a kind (and name), failing the test when there is none or several."""
    matches = [
        item for item in objects_of_kind(documents, kind) if name is None or item["metadata"]["name"] == name
    ]
    assert len(matches) == 1, f"expected one {kind} named {name or '(any)'}, found {len(matches)}"
    return matches[0]


def controller_pod_spec(documents: list[Document]) -> dict[str, Any]:
    return only_object(documents, "Deployment")["spec"]["template"]["spec"]


def controller_container(documents: list[Document]) -> dict[str, Any]:
    containers = controller_pod_spec(documents)["containers"]
    assert [container["name"] for container in containers] == ["gangway"]
    return containers[0]


def command_line_flags(container: dict[str, Any]) -> dict[str, str]:
    """Map each `--flag=value` argument after `run` to its value, failing on any other form or a repeat."""
    args = container["args"]
    assert args[0] == "run", f"the container must run `gangway run`, got {args!r}"
    flags: dict[str, str] = {}
    for argument in args[1:]:
        assert argument.startswith("--"), f"argument {argument!r} is not a long flag"
        assert "=" in argument, f"argument {argument!r} is not in --flag=value form"
        flag, value = argument.split("=", 1)
        assert flag not in flags, f"flag {flag} appears twice"
        flags[flag] = value
    return flags


def environment(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Map each environment variable name to its EnvVar object."""
    return {variable["name"]: variable for variable in container.get("env", [])}


def rules_of(role: dict[str, Any]) -> list[dict[str, Any]]:
    return role.get("rules") or []


def role_permissions(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Flatten a Role's or ClusterRole's rules into (apiGroup, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in rules_of(role)
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }
