"""Case 7: the Rust compiler benchmarks (benches/compile.rs and benches/compile_memory.rs),
run with cargo and read from criterion's estimates and the memory benchmark's JSON line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .system import BenchError

MIB = 1024 * 1024

QUICK_CRITERION_FLAGS = ["--warm-up-time", "0.5", "--measurement-time", "1", "--sample-size", "10"]


def run_compiler_benchmarks(repo: Path, log: Path, quick: bool, cpus: str | None) -> dict:
    """Build and run both benchmarks, pinned to `cpus`; return medians in milliseconds and
    the peak heap in MiB."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pin = ["taskset", "-c", cpus] if cpus is not None else []
    with log.open("ab") as output:
        # Build first, unpinned, so the build does not run on one core.
        _cargo(["cargo", "bench", "--bench", "compile", "--bench", "compile_memory", "--no-run"],
               repo, output)
        flags = QUICK_CRITERION_FLAGS if quick else []
        _cargo([*pin, "cargo", "bench", "--bench", "compile", "--", "--noplot", *flags], repo, output)
        memory = subprocess.run(
            [*pin, "cargo", "bench", "--bench", "compile_memory"],
            cwd=repo, stdout=subprocess.PIPE, stderr=output, text=True, timeout=1800,
        )
    if memory.returncode != 0:
        raise BenchError(f"cargo bench --bench compile_memory failed; see {log}")
    peak = _last_json_line(memory.stdout)

    criterion = repo / "target" / "criterion"
    return {
        "compile_ms": {
            "1000": _median_ms(criterion / "compile" / "1000"),
            "10000": _median_ms(criterion / "compile" / "10000"),
        },
        "apply_change_ms": _median_ms(criterion / "apply_change" / "10000"),
        "compile_peak_mib": peak["compile_peak_bytes"] / MIB,
        "store_mib": peak["store_bytes"] / MIB,
    }


def _cargo(argv: list[str], repo: Path, output) -> None:
    result = subprocess.run(argv, cwd=repo, stdout=output, stderr=output, timeout=1800)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed with status {result.returncode}")


def _median_ms(directory: Path) -> float:
    """Criterion's median estimate of one benchmark, in milliseconds."""
    estimates = directory / "new" / "estimates.json"
    try:
        nanoseconds = json.loads(estimates.read_text())["median"]["point_estimate"]
    except (OSError, KeyError, json.JSONDecodeError) as error:
        raise BenchError(f"failed to read {estimates}: {error}") from error
    return nanoseconds / 1e6


def _last_json_line(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError("compile_memory printed no JSON line")
