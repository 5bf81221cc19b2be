"""The results table: medians per target, Gangway's ratios to nginx and HAProxy, and each
target of the benchmark brief marked met or missed."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

TARGETS = ["direct", "nginx", "haproxy", "gangway"]


@dataclass
class Ratio:
    """Gangway's figure divided by `other`'s must be `at_least` or `at_most` this value."""

    other: str
    bound: float
    at_least: bool

    def describe(self) -> str:
        sign = "≥" if self.at_least else "≤"
        return f"{sign} {self.bound:g}× {self.other}"


@dataclass
class Row:
    """One line of the table."""

    case: str
    measure: str
    values: dict[str, str]
    ratio_nginx: str = ""
    ratio_haproxy: str = ""
    target: str = ""
    # True met, False missed, None not checked (no target, or a figure is missing).
    met: bool | None = None


@dataclass
class Results:
    """Figures by case and target, one dict per run, and the failures that stopped a case."""

    runs: dict[str, dict[str, list[dict]]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, case: str, target: str, figures: dict) -> None:
        self.runs.setdefault(case, {}).setdefault(target, []).append(figures)

    def fail(self, case: str, target: str, message: str) -> None:
        self.errors.setdefault(case, {})[target] = message

    def median(self, case: str, target: str, key: str) -> float | None:
        """Median of `key` over the runs of `case` on `target`, or None when not measured."""
        if target in self.errors.get(case, {}):
            return None
        values = [
            run[key] for run in self.runs.get(case, {}).get(target, [])
            if isinstance(run.get(key), (int, float)) and not math.isnan(run[key])
        ]
        return statistics.median(values) if values else None


def _format(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None, other: float | None) -> float | None:
    if value is None or other is None or other == 0:
        return None
    return value / other


def _metric_row(results: Results, case: str, label: str, key: str, measure: str,
                digits: int, ratios: list[Ratio]) -> Row:
    medians = {target: results.median(case, target, key) for target in TARGETS}
    values = {target: _format(medians[target], digits) for target in TARGETS}
    for target, message in results.errors.get(case, {}).items():
        values[target] = "failed"
    gangway = medians["gangway"]
    to_nginx = _ratio(gangway, medians["nginx"])
    to_haproxy = _ratio(gangway, medians["haproxy"])
    met: bool | None = None
    if ratios:
        checks = []
        for ratio in ratios:
            actual = _ratio(gangway, medians[ratio.other])
            if actual is None:
                checks.append(None)
            else:
                checks.append(actual >= ratio.bound if ratio.at_least else actual <= ratio.bound)
        met = None if None in checks else all(checks)
    return Row(
        case=label, measure=measure, values=values,
        ratio_nginx=_format(to_nginx, 2), ratio_haproxy=_format(to_haproxy, 2),
        target=", ".join(ratio.describe() for ratio in ratios), met=met,
    )


def _gangway_row(label: str, measure: str, value: float | None, digits: int,
                 target: str, met: bool | None) -> Row:
    values = {name: "" for name in TARGETS}
    values["gangway"] = _format(value, digits)
    return Row(case=label, measure=measure, values=values, target=target,
               met=None if value is None else met)


def build_rows(results: Results, compiler: dict | None) -> list[Row]:
    """Build every row of the table, in case order."""
    rows: list[Row] = []
    throughput = [Ratio("nginx", 1.3, True), Ratio("haproxy", 1.2, True), Ratio("direct", 0.6, True)]
    p99 = [Ratio("nginx", 1.0, False)]
    cpu = [Ratio("nginx", 0.7, False)]

    for case, label in [
        ("http1_connections", "1 HTTP/1.1, fixed connections"),
        ("http1_rate", "1 HTTP/1.1, fixed rate"),
        ("h2_steady", "2 HTTP/2+TLS, steady"),
        ("tls_handshakes", "2 TLS handshake per request"),
    ]:
        if case != "http1_rate":
            rows.append(_metric_row(results, case, label, "rps", "requests/s", 0, throughput))
        rows.append(_metric_row(results, case, label, "p50_ms", "p50 latency, ms", 2, []))
        rows.append(_metric_row(results, case, label, "p99_ms", "p99 latency, ms", 2, p99))
        rows.append(_metric_row(results, case, label, "cpu_per_10k", "proxy CPU s per 10k requests", 3, cpu))
        # The user-space part shows the proxy's own work; the kernel's share is mostly the
        # same TCP work for every proxy.
        rows.append(_metric_row(results, case, label, "user_cpu_per_10k", "of which user space", 3, []))
        if case == "http1_connections":
            reuse = results.median(case, "gangway", "upstream_reuse_percent")
            rows.append(_gangway_row(label, "upstream connection reuse, %", reuse, 3,
                                     "> 99.9 %", reuse is not None and reuse > 99.9))

    rows.append(_metric_row(results, "large_body", "3 1 MiB responses", "mib_per_second", "MiB/s", 0, []))
    rows.append(_metric_row(results, "large_body", "3 1 MiB responses", "peak_rss_mib", "proxy peak RSS, MiB", 1, []))
    rows.append(_metric_row(results, "large_body", "3 1 MiB responses", "cpu_per_10k", "proxy CPU s per 10k requests", 3, []))

    rows.append(_metric_row(results, "idle_connections", "4 idle connections", "idle_rss_mib",
                            "proxy RSS, MiB", 1, [Ratio("nginx", 0.5, False)]))
    rows.append(_metric_row(results, "idle_connections", "4 idle connections", "kib_per_connection",
                            "KiB per connection", 1, []))

    small = results.median("scale_small", "gangway", "rps")
    large = results.median("scale_large", "gangway", "rps")
    small_p99 = results.median("scale_small", "gangway", "p99_ms")
    large_p99 = results.median("scale_large", "gangway", "p99_ms")
    fall = None if small is None or large is None else 100.0 * (small - large) / small
    rise = None if small_p99 is None or large_p99 is None else 100.0 * (large_p99 - small_p99) / small_p99
    rows.append(_gangway_row("5 route scale", "requests/s, few Ingresses", small, 0, "", None))
    rows.append(_gangway_row("5 route scale", "requests/s, many Ingresses", large, 0, "", None))
    rows.append(_gangway_row("5 route scale", "requests/s fall, %", fall, 1, "≤ 10 %",
                             fall is not None and fall <= 10.0))
    rows.append(_gangway_row("5 route scale", "p99 rise, %", rise, 1, "≤ 10 %",
                             rise is not None and rise <= 10.0))

    for key, measure, digits in [
        ("failed", "failed requests", 0),
        ("changes_not_serving", "changes not serving after 5 s", 0),
        ("change_p50_ms", "change to serving p50, ms", 1),
        ("change_p99_ms", "change to serving p99, ms", 1),
        ("change_max_ms", "change to serving max, ms", 1),
    ]:
        row = _metric_row(results, "churn", "6 route churn", key, measure, digits, [])
        gangway = results.median("churn", "gangway", key)
        if key == "failed":
            row.target, row.met = "0", None if gangway is None else gangway == 0
        if key == "change_p99_ms":
            row.target, row.met = "≤ 50 ms", None if gangway is None else gangway <= 50.0
        # A zero in nginx's column makes a ratio meaningless here.
        row.ratio_nginx = row.ratio_haproxy = ""
        rows.append(row)

    compiler = compiler or {}
    milliseconds = compiler.get("compile_ms", {})
    rows.append(_gangway_row("7 compiler", "compile 1,000 Ingresses, ms", milliseconds.get("1000"), 2, "", None))
    ten_thousand = milliseconds.get("10000")
    rows.append(_gangway_row("7 compiler", "compile 10,000 Ingresses, ms", ten_thousand, 2,
                             "< 100 ms", ten_thousand is not None and ten_thousand < 100.0))
    rows.append(_gangway_row("7 compiler", "one change to 10,000, ms", compiler.get("apply_change_ms"), 2, "", None))
    peak = compiler.get("compile_peak_mib")
    rows.append(_gangway_row("7 compiler", "compile 10,000 peak heap, MiB", peak, 1,
                             "< 200 MiB", peak is not None and peak < 200.0))
    return rows


HEADERS = ["Case", "Measure", "direct", "nginx", "HAProxy", "Gangway",
           "Gangway/nginx", "Gangway/HAProxy", "Target", "Met"]


def _cells(row: Row, quick: bool) -> list[str]:
    met = {True: "met", False: "MISSED", None: ""}[row.met]
    if row.target and row.met is None:
        met = "not measured"
    elif row.target and quick:
        # A run of a few seconds shows that each case works; its figures are too noisy to
        # judge a target by.
        met = "not judged (quick)"
    return [row.case, row.measure, *(row.values[target] for target in TARGETS),
            row.ratio_nginx, row.ratio_haproxy, row.target, met]


def render_text(rows: list[Row], quick: bool = False) -> str:
    """Render the rows as a fixed-width table for the terminal. With `quick`, targets are
    not judged."""
    table = [HEADERS] + [_cells(row, quick) for row in rows]
    widths = [max(len(line[column]) for line in table) for column in range(len(HEADERS))]
    lines = []
    for index, line in enumerate(table):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def render_markdown(rows: list[Row], quick: bool = False) -> str:
    """Render the rows as a Markdown table for docs/benchmarks.md. With `quick`, targets are
    not judged."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        cells = _cells(row, quick)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
