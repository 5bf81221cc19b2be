"""`helm lint --strict` on the Gangway chart, through Helm's own linter."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

import render

# Severities in Helm's lint report: 1 info, 2 warning, 3 error. Strict lint fails on warnings.
WARNING = 2

VALUE_SETS: dict[str, dict[str, Any] | None] = {
    "default values": None,
    "one watched namespace": {"controller": {"watchNamespace": "apps"}},
    "every optional object": {
        "autoscaling": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "ingressClass": {"default": True},
    },
    "privileged ports": {"controller": {"containerPorts": {"http": 80, "https": 443}}},
}


def lint_findings(values: dict[str, Any] | None) -> list[str]:
    report = helm.lint(render.CHART_DIR, values, strict=True, namespace=render.DEFAULT_NAMESPACE)
    findings = [f"{message['path']}: {message['error']}" for message in report["messages"] if message["severity"] >= WARNING]
    return findings + list(report["errors"])


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_strict_lint_passes(values: dict[str, Any] | None) -> None:
    assert lint_findings(values) == []


def test_strict_lint_reports_schema_violation() -> None:
    findings = lint_findings({"controller": {"logFormat": "xml"}})

    assert any("logFormat" in finding for finding in findings), findings
