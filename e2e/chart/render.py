#!/usr/bin/env python3
"""Render the Gangway Helm chart offline and write the plain install manifest.

The chart tests import this module, and deploy/gangway.yaml is its output for
the default values:

    .venv/bin/python e2e/chart/render.py                              # print
    .venv/bin/python e2e/chart/render.py --write deploy/gangway.yaml  # regenerate
    .venv/bin/python e2e/chart/render.py --set replicas=3 --values my-values.yaml

Rendering goes through helm-python-sdk, which runs Helm's own Go library, so
values.schema.json and the templates' checks apply exactly as in `helm install`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "gangway"
DEPLOY_MANIFEST = REPO_ROOT / "deploy" / "gangway.yaml"
DEFAULT_RELEASE = "gangway"
DEFAULT_NAMESPACE = "gangway"
REGENERATE_COMMAND = "e2e/setup.sh && .venv/bin/python e2e/chart/render.py --write deploy/gangway.yaml"

# Kinds in the order `helm install` applies them (InstallOrder in Helm 3's
# pkg/releaseutil/kind_sorter.go), cut down to the kinds this chart renders.
# Kinds missing here, such as ServiceMonitor, go last, as Helm puts them.
INSTALL_ORDER = [
    "Namespace",
    "PodDisruptionBudget",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
    "IngressClass",
]

NAMESPACE_DOCUMENT = """\
apiVersion: v1
kind: Namespace
metadata:
  name: {namespace}
  labels:
    app.kubernetes.io/name: gangway
    app.kubernetes.io/part-of: gangway
    # The controller pods meet the "restricted" Pod Security Standard.
    pod-security.kubernetes.io/enforce: restricted
"""


class Document:
    """One rendered Kubernetes object: its template path, its YAML text and the parsed object."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text.strip() + "\n"
        self.object: dict[str, Any] = yaml.safe_load(text)

    @property
    def kind(self) -> str:
        return str(self.object["kind"])

    @property
    def name(self) -> str:
        return str(self.object["metadata"]["name"])

    def install_rank(self) -> int:
        if self.kind in INSTALL_ORDER:
            return INSTALL_ORDER.index(self.kind)
        return len(INSTALL_ORDER)


def load_chart() -> helm.Chart:
    """Load charts/gangway. The caller closes the chart, or uses it in a `with` block."""
    return helm.Chart.load(CHART_DIR)


def render_documents(
    values: dict[str, Any] | None = None,
    *,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
    chart: helm.Chart | None = None,
) -> list[Document]:
    """Render the chart as an install would and return its objects in install order.

    Raises helm_python.HelmValuesError when the values break values.schema.json,
    and helm_python.HelmRenderError when a template fails (the chart's own
    consistency checks use `fail`).
    """
    if chart is None:
        with load_chart() as loaded:
            return render_documents(values, release=release, namespace=namespace, chart=loaded)

    rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    documents = []
    for source in sorted(rendered):
        if source.endswith("NOTES.txt"):
            continue
        for text in rendered[source].split("\n---\n"):
            # A template whose condition is false renders only blank lines.
            if yaml.safe_load(text) is None:
                continue
            documents.append(Document(source, text))

    # sorted() is stable, so objects of one kind keep the template order.
    return sorted(documents, key=Document.install_rank)


def render_install_manifest(
    *, release: str = DEFAULT_RELEASE, namespace: str = DEFAULT_NAMESPACE, values: dict[str, Any] | None = None
) -> str:
    """Return the plain manifest for `kubectl apply -f`: a Namespace, then the chart's objects."""
    if values is None and (release, namespace) == (DEFAULT_RELEASE, DEFAULT_NAMESPACE):
        header = (
            "# Gangway installed without Helm: the chart charts/gangway rendered with its\n"
            f'# default values as release "{release}" in namespace "{namespace}".\n'
            "#\n"
            "#   kubectl apply -f deploy/gangway.yaml\n"
            "#\n"
            "# Generated file, do not edit. After a chart change, regenerate it with\n"
            f"#   {REGENERATE_COMMAND}\n"
        )
    else:
        header = (
            "# Gangway installed without Helm: the chart charts/gangway rendered by\n"
            f'# e2e/chart/render.py with custom settings as release "{release}" in namespace "{namespace}".\n'
        )

    parts = [
        header,
        "---\n# Source: e2e/chart/render.py (the namespace the chart is rendered into)\n",
        NAMESPACE_DOCUMENT.format(namespace=namespace),
    ]
    for document in render_documents(values, release=release, namespace=namespace):
        parts.append(f"---\n# Source: {document.source}\n{document.text}")
    return "".join(parts)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH", type=Path, help="write the manifest to PATH instead of printing it")
    parser.add_argument("--release", default=DEFAULT_RELEASE, help="release name (default: %(default)s)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="release namespace (default: %(default)s)")
    parser.add_argument(
        "--values", metavar="FILE", type=Path, action="append", default=[], help="values file, as `helm --values`"
    )
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="one value, as `helm --set`")
    return parser.parse_args(argv)


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge override into base as Helm merges values files: maps key by key, while lists and scalars are replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)

    values: dict[str, Any] = {}
    for path in arguments.values:
        values = merge_values(values, yaml.safe_load(path.read_text()) or {})
    if arguments.set:
        # One parse of all expressions, so that list indices from several --set
        # flags fill one list, as Helm's parser does when it reads them in turn.
        values = merge_values(values, helm.parse_set_string(",".join(arguments.set)))

    try:
        manifest = render_install_manifest(
            release=arguments.release, namespace=arguments.namespace, values=values or None
        )
    except helm.HelmError as error:
        print(f"render.py: failed to render {CHART_DIR}: {error}", file=sys.stderr)
        return 1

    if arguments.write is None:
        sys.stdout.write(manifest)
    else:
        arguments.write.parent.mkdir(parents=True, exist_ok=True)
        arguments.write.write_text(manifest)
        print(f"render.py: wrote {arguments.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
