"""Fixtures of the Gangway chart tests: the loaded chart and a renderer bound to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest

import render
from chart_objects import Renderer


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with render.load_chart() as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render_chart(chart: helm.Chart) -> Renderer:
    """Return a function that renders the chart with the given values, as `helm install` would."""

    def render_with(values: dict[str, Any] | None = None, **options: Any) -> list[render.Document]:
        return render.render_documents(values, chart=chart, **options)

    return render_with


@pytest.fixture(scope="session")
def default_documents(render_chart: Renderer) -> list[render.Document]:
    return render_chart()
