"""charts/gangway/README.md documents every value, and its values table matches values.yaml."""

from __future__ import annotations

import yaml

import values_table


def test_readme_values_table_in_sync() -> None:
    readme = values_table.README_FILE.read_text()

    expected = values_table.replace_table(readme, values_table.build_table())

    assert readme == expected, (
        "the values table in charts/gangway/README.md is out of sync with values.yaml. Regenerate it with:\n"
        f"  {values_table.REGENERATE_COMMAND}"
    )


def test_every_value_documented() -> None:
    text = values_table.VALUES_FILE.read_text()

    _, undocumented = values_table.collect_rows(yaml.safe_load(text), values_table.documented_paths(text))

    assert undocumented == []


def test_undocumented_value_detected() -> None:
    text = "# -- Described.\nfirst: 1\nsection:\n  # -- Described too.\n  inner: true\n  bare: x\n\n# -- Dangling.\n\nlast: 2\n"

    rows, undocumented = values_table.collect_rows(yaml.safe_load(text), values_table.documented_paths(text))

    assert [row.path for row in rows] == ["first", "section.inner"]
    assert undocumented == ["section.bare", "last"]


def test_documented_map_is_one_row() -> None:
    text = "# -- The whole map.\nresources:\n  requests:\n    cpu: 100m\n"

    rows, undocumented = values_table.collect_rows(yaml.safe_load(text), values_table.documented_paths(text))

    assert [(row.path, row.default) for row in rows] == [("resources", {"requests": {"cpu": "100m"}})]
    assert undocumented == []
