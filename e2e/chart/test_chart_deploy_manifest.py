"""deploy/gangway.yaml stays the chart's default render, and render.py's command line works."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

import yaml

import render

DIFF_LINES_SHOWN = 40


def test_deploy_manifest_in_sync() -> None:
    expected = render.render_install_manifest()
    actual = render.DEPLOY_MANIFEST.read_text() if render.DEPLOY_MANIFEST.exists() else ""

    if actual != expected:
        diff = difflib.unified_diff(
            actual.splitlines(), expected.splitlines(), "deploy/gangway.yaml", "chart render", lineterm=""
        )
        diff_excerpt = "\n".join(list(diff)[:DIFF_LINES_SHOWN])
        raise AssertionError(
            "deploy/gangway.yaml is out of sync with charts/gangway. Regenerate it with:\n"
            f"  {render.REGENERATE_COMMAND}\n{diff_excerpt}"
        )


def test_deploy_manifest_starts_with_namespace() -> None:
    objects = [item for item in yaml.safe_load_all(render.DEPLOY_MANIFEST.read_text()) if item]

    assert objects[0]["kind"] == "Namespace"
    assert objects[0]["metadata"]["name"] == "gangway"
    assert objects[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(item["metadata"].get("namespace", "gangway") == "gangway" for item in objects)


def run_render_script(*arguments: str) -> subprocess.CompletedProcess[str]:
    script = Path(render.__file__)
    return subprocess.run(
        [sys.executable, str(script), *arguments], capture_output=True, text=True, timeout=60, check=False
    )


def test_render_script_applies_set(tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text("replicas: 4\ncontroller:\n  logFormat: text\n")

    result = run_render_script("--values", str(values_file), "--set", "replicas=3", "--namespace", "edge")

    assert result.returncode == 0, result.stderr
    objects = [item for item in yaml.safe_load_all(result.stdout) if item]
    deployment = next(item for item in objects if item["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert "--log-format=text" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert objects[0] == yaml.safe_load(render.NAMESPACE_DOCUMENT.format(namespace="edge"))


def test_render_script_writes_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "gangway.yaml"

    result = run_render_script("--write", str(target))

    assert result.returncode == 0, result.stderr
    assert target.read_text() == render.render_install_manifest()


def test_render_script_reports_bad_values() -> None:
    result = run_render_script("--set", "controller.logFormat=xml")

    assert result.returncode == 1
    assert "failed to render" in result.stderr
    assert "/controller/logFormat" in result.stderr


def test_render_script_joins_list_indices() -> None:
    result = run_render_script(
        "--set", "topologySpreadConstraints[0].maxSkew=1",
        "--set", "topologySpreadConstraints[0].topologyKey=zone",
        "--set", "topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule",
    )

    assert result.returncode == 0, result.stderr
    deployment = next(item for item in yaml.safe_load_all(result.stdout) if item and item["kind"] == "Deployment")
    constraint = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert constraint["maxSkew"] == 1
    assert constraint["topologyKey"] == "zone"
    assert constraint["whenUnsatisfiable"] == "DoNotSchedule"
