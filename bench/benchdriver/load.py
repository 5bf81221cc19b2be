"""The load generator: oha, run for a fixed time against one target, its JSON summary read
into a LoadResult."""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .configs import BENCH_HOST
from .system import BenchError


@dataclass
class LoadSpec:
    """One oha run. `rate` is requests per second over all connections, or None for as
    fast as the connections go."""

    port: int
    path: str = "/"
    host: str = BENCH_HOST
    connections: int = 50
    seconds: float = 10.0
    rate: int | None = None
    tls: bool = False
    # HTTP/2 (with `streams_per_connection` streams) or HTTP/1.1; TLS only.
    http2: bool = False
    streams_per_connection: int = 1
    new_connection_per_request: bool = False
    # A POST with a body of this many bytes instead of a GET, when above 0.
    body_bytes: int = 0


@dataclass
class LoadResult:
    """Requests that completed within the run, their latency and what failed."""

    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    bytes_per_second: float
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """Requests that got a status other than 200, or no response at all."""
        non_200 = sum(count for status, count in self.statuses.items() if status != "200")
        return non_200 + sum(self.errors.values())


def oha_argv(oha: Path, spec: LoadSpec) -> list[str]:
    """Build the oha command line for `spec`. Every URL names 127.0.0.1 or, for TLS, a name
    that --connect-to maps to 127.0.0.1."""
    argv = [
        str(oha), "--no-tui", "--output-format", "json",
        "-z", f"{spec.seconds}s",
        "-c", str(spec.connections),
        # Requests still running at the deadline finish and count, instead of being
        # reported as errors.
        "--wait-ongoing-requests-after-deadline",
        # oha sizes its runtime by physical cores, not by the CPUs taskset allows.
        "--worker-threads", "1",
    ]
    if spec.rate is not None:
        # Latency correction measures from when each request was due, not when it was sent,
        # so a server that stalls is not flattered (coordinated omission).
        argv += ["-q", str(spec.rate), "--latency-correction"]
    if spec.new_connection_per_request:
        # oha 1.16 supports this for HTTP/1.1 only.
        argv += ["--disable-keepalive"]
    if spec.body_bytes:
        argv += ["-m", "POST", "-d", "x" * spec.body_bytes]
    if spec.http2:
        argv += ["--http2", "-p", str(spec.streams_per_connection)]
    if spec.tls:
        argv += ["--insecure", "--connect-to", f"{spec.host}:{spec.port}:127.0.0.1:{spec.port}"]
        url = f"https://{spec.host}:{spec.port}{spec.path}"
    else:
        argv += ["-H", f"Host: {spec.host}"]
        url = f"http://127.0.0.1:{spec.port}{spec.path}"
    return [*argv, url]


def start_load(oha: Path, spec: LoadSpec, log: Path) -> subprocess.Popen:
    """Start oha in the background; `finish_load` waits for it and reads its result."""
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        oha_argv(oha, spec),
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        stdin=subprocess.DEVNULL,
        text=True,
        # A shell starts background jobs with SIGINT ignored, and oha would inherit that;
        # interrupt_load needs SIGINT to reach oha's handler.
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_load(process: subprocess.Popen, spec: LoadSpec) -> LoadResult:
    """End an oha run early with SIGINT, after which oha prints its summary as usual."""
    process.send_signal(signal.SIGINT)
    return finish_load(process, spec)


def finish_load(process: subprocess.Popen, spec: LoadSpec) -> LoadResult:
    """Wait for an oha run and parse its summary. Raises BenchError when oha fails or no
    request completed."""
    try:
        output, _ = process.communicate(timeout=spec.seconds + 120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise BenchError(f"oha did not finish within {spec.seconds + 120:.0f} s")
    if process.returncode != 0:
        raise BenchError(f"oha exited with status {process.returncode}")
    return parse_oha(output)


def run_load(oha: Path, spec: LoadSpec, log: Path) -> LoadResult:
    """Run oha in the foreground and return its result."""
    return finish_load(start_load(oha, spec, log), spec)


def parse_oha(output: str) -> LoadResult:
    """Read oha's `--output-format json` summary: latencies in seconds, counts by status."""
    try:
        report = json.loads(output)
    except json.JSONDecodeError as error:
        raise BenchError(f"failed to parse oha's JSON output: {error}") from error
    summary = report["summary"]
    statuses = {str(status): int(count) for status, count in report["statusCodeDistribution"].items()}
    errors = {str(kind): int(count) for kind, count in report["errorDistribution"].items()}
    requests = sum(statuses.values())
    if requests == 0:
        raise BenchError(f"no request completed; oha errors: {errors}")
    percentiles = report["latencyPercentiles"]
    return LoadResult(
        requests=requests,
        seconds=float(summary["total"]),
        requests_per_second=float(summary["requestsPerSec"]),
        p50_ms=float(percentiles["p50"] or 0.0) * 1000,
        p99_ms=float(percentiles["p99"] or 0.0) * 1000,
        bytes_per_second=float(summary.get("sizePerSec") or 0.0),
        statuses=statuses,
        errors=errors,
    )
