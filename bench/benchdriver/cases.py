"""The measured cases. Each returns, for one target, a dict of named figures; the driver
repeats it, takes medians and the report compares targets."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import idle
from .configs import BENCH_HOST, LARGE_BODY_BYTES, LARGE_PATH
from .load import LoadSpec, interrupt_load, run_load, start_load
from .system import BenchError, MemorySampler, tree_usage
from .targets import Gangway, Target, http_status, settle

MIB = 1024 * 1024


@dataclass
class Settings:
    """Durations and sizes of one benchmark run; `quick()` shrinks them for CI."""

    seconds: float = 10.0
    warmup_seconds: float = 2.0
    connections: int = 50
    fixed_rate: int = 5000
    h2_connections: int = 10
    h2_streams: int = 10
    large_connections: int = 10
    idle_connections: int = 10_000
    # Past Gangway's one-second parking delay, its pool's sweep a second later, and the
    # second over which jemalloc returns freed pages, so that the connections are measured
    # idle rather than on their way there.
    idle_hold_seconds: float = 5.0
    scale_ingresses: int = 10_000
    churn_changes: int = 100
    churn_interval_seconds: float = 0.2
    churn_rate: int = 2000
    churn_connections: int = 20
    # A change that is not serving after this long counts as failed.
    churn_poll_timeout_seconds: float = 5.0

    @classmethod
    def quick(cls) -> "Settings":
        return cls(
            seconds=2.0,
            warmup_seconds=0.5,
            fixed_rate=2000,
            idle_connections=2_000,
            # Past Gangway's one-second parking delay, so that quick mode parks them too.
            idle_hold_seconds=2.0,
            scale_ingresses=2_000,
            churn_changes=20,
            churn_interval_seconds=0.1,
        )


@dataclass
class Context:
    """Inputs shared by every case: the load generator, the work directory, the settings."""

    oha: Path
    work: Path
    settings: Settings


def _measure(context: Context, target: Target, spec: LoadSpec, label: str) -> dict[str, float]:
    """Warm up, then run `spec` once, reading the proxy's CPU time around the run and
    sampling its RSS during it."""
    logs = context.work / "logs" / f"{label}-{target.name}.log"
    run_load(context.oha, dataclasses.replace(spec, seconds=context.settings.warmup_seconds), logs)

    root = target.root_pid
    before = tree_usage(root) if root else None
    sampler = MemorySampler(root) if root else None
    stop = threading.Event()

    def sample_memory() -> None:
        while not stop.wait(0.1):
            sampler.sample()

    sampling = threading.Thread(target=sample_memory, daemon=True) if sampler else None
    if sampling:
        sampling.start()
    try:
        result = run_load(context.oha, spec, logs)
    finally:
        stop.set()
        if sampling:
            sampling.join()
    figures = {
        "requests": float(result.requests),
        "rps": result.requests / result.seconds,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "failed": float(result.failed),
        "mib_per_second": result.bytes_per_second / MIB,
    }
    if root:
        after = tree_usage(root)
        sampler.sample()
        figures["cpu_per_10k"] = (after.cpu_seconds - before.cpu_seconds) / result.requests * 10_000
        figures["user_cpu_per_10k"] = ((after.user_seconds - before.user_seconds)
                                       / result.requests * 10_000)
        figures["peak_rss_mib"] = sampler.peak / MIB
    if result.failed:
        # Nothing changes during these cases, so any failed request means a broken setup.
        raise BenchError(f"{result.failed} of {result.requests} requests failed: "
                         f"statuses {result.statuses}, errors {result.errors}")
    return figures


def _with_target(target: Target, hosts: list[str], body, scale_ingresses: int = 0):
    target.start(hosts, scale_ingresses)
    try:
        settle()
        return body()
    finally:
        target.stop()


def http1_connections(context: Context, target: Target) -> dict[str, float]:
    """Case 1a: HTTP/1.1 keep-alive, small responses, a fixed number of connections."""
    spec = LoadSpec(port=target.ports.http, connections=context.settings.connections,
                    seconds=context.settings.seconds)

    def body():
        figures = _measure(context, target, spec, "http1-connections")
        if isinstance(target, Gangway):
            figures.update(_upstream_reuse(target))
        return figures

    return _with_target(target, [BENCH_HOST], body)


def _upstream_reuse(target: Gangway) -> dict[str, float]:
    """Upstream connection reuse over the process's life, warm-up included, from /metrics."""
    metrics = target.metrics()
    opened = metrics.get("gangway_upstream_connections_opened_total", 0.0)
    reused = metrics.get("gangway_upstream_connections_reused_total", 0.0)
    if opened + reused == 0:
        raise BenchError("gangway /metrics counted no upstream connection")
    return {
        "upstream_opened": opened,
        "upstream_reused": reused,
        "upstream_reuse_percent": 100.0 * reused / (opened + reused),
    }


def http1_rate(context: Context, target: Target) -> dict[str, float]:
    """Case 1b: HTTP/1.1 keep-alive at a fixed request rate, below every target's capacity,
    so latency and CPU per request compare at equal work."""
    spec = LoadSpec(port=target.ports.http, connections=context.settings.connections,
                    seconds=context.settings.seconds, rate=context.settings.fixed_rate)
    return _with_target(target, [BENCH_HOST],
                        lambda: _measure(context, target, spec, "http1-rate"))


def h2_steady(context: Context, target: Target) -> dict[str, float]:
    """Case 2a: HTTP/2 over TLS, long-lived connections with several streams each."""
    spec = LoadSpec(port=target.ports.https, connections=context.settings.h2_connections,
                    streams_per_connection=context.settings.h2_streams,
                    seconds=context.settings.seconds, tls=True, http2=True)
    return _with_target(target, [BENCH_HOST],
                        lambda: _measure(context, target, spec, "h2-steady"))


def tls_handshakes(context: Context, target: Target) -> dict[str, float]:
    """Case 2b: a new TLS connection, so a full TLS 1.3 handshake, for every request:
    requests per second is the handshake rate.

    TODO: open each connection with HTTP/2, which adds the connection preface and the
    SETTINGS exchange to the handshake. oha 1.16 always reuses HTTP/2 connections, so this
    case uses HTTP/1.1 over TLS."""
    spec = LoadSpec(port=target.ports.https, connections=context.settings.h2_connections,
                    seconds=context.settings.seconds, tls=True,
                    new_connection_per_request=True)
    return _with_target(target, [BENCH_HOST],
                        lambda: _measure(context, target, spec, "tls-handshakes"))


def large_body(context: Context, target: Target) -> dict[str, float]:
    """Case 3: a 1 MiB response body streamed through, over HTTP/1.1 keep-alive."""
    spec = LoadSpec(port=target.ports.http, path=LARGE_PATH,
                    connections=context.settings.large_connections,
                    seconds=context.settings.seconds)

    def body():
        figures = _measure(context, target, spec, "large-body")
        # oha's sizePerSec counts body bytes; recompute from the request count as a check
        # that whole bodies arrived.
        figures["mib_per_second"] = figures["rps"] * LARGE_BODY_BYTES / MIB
        return figures

    return _with_target(target, [BENCH_HOST], body)


def idle_connections(context: Context, target: Target) -> dict[str, float]:
    """Case 4: RSS of the proxy with many idle keep-alive connections, each of which has
    completed one request."""
    count = context.settings.idle_connections

    def body():
        root = target.root_pid
        baseline = tree_usage(root).rss_bytes if root else 0
        opened, still_open, failed, first_error, rss = idle.hold_idle_connections(
            target.ports.http, BENCH_HOST, count, context.settings.idle_hold_seconds,
            lambda: tree_usage(root).rss_bytes if root else 0,
        )
        if failed or still_open < count:
            raise BenchError(
                f"{target.name}: {opened} of {count} idle connections got a 200 "
                f"({failed} failed, first failure {first_error}), {still_open} still open"
            )
        figures = {"connections": float(still_open)}
        if root:
            figures["idle_rss_mib"] = rss / MIB
            figures["baseline_rss_mib"] = baseline / MIB
            figures["kib_per_connection"] = (rss - baseline) / 1024 / count
        return figures

    return _with_target(target, [BENCH_HOST], body)


def route_scale(context: Context, target: Gangway, ingresses: int) -> dict[str, float]:
    """Case 5: HTTP/1.1 load on one host out of `ingresses` Ingresses (each with its own
    host and two paths), from the middle of the list so that neither end is favoured."""
    host = f"host-{ingresses // 2}.{BENCH_HOST}"
    spec = LoadSpec(port=target.ports.http, host=host,
                    connections=context.settings.connections,
                    seconds=context.settings.seconds)
    return _with_target(target, [BENCH_HOST],
                        lambda: _measure(context, target, spec, f"scale-{ingresses}"),
                        scale_ingresses=ingresses)


def churn(context: Context, target: Target) -> dict[str, float]:
    """Case 6: route changes during steady load on another route. Each change adds a host.
    The time to serve runs from just before the change to the first 200 from the new host,
    polled on a new connection."""
    settings = context.settings
    # The load runs until the changes are done and a second more, then gets SIGINT; the
    # duration given to oha only bounds a run whose driver died.
    spec = LoadSpec(
        port=target.ports.http, connections=settings.churn_connections,
        rate=settings.churn_rate,
        seconds=settings.churn_changes * (settings.churn_interval_seconds
                                          + settings.churn_poll_timeout_seconds) + 10.0,
    )

    def body():
        log = context.work / "logs" / f"churn-{target.name}.log"
        load = start_load(context.oha, spec, log)
        hosts = [BENCH_HOST]
        delays_ms: list[float] = []
        not_serving = 0
        try:
            time.sleep(1.0)
            for change in range(settings.churn_changes):
                host = f"churn-{change}.{BENCH_HOST}"
                hosts.append(host)
                started = time.perf_counter()
                target.change_routes(hosts)
                delay = _poll_until_served(target.ports.http, host, started,
                                           settings.churn_poll_timeout_seconds)
                if delay is None:
                    not_serving += 1
                else:
                    delays_ms.append(delay * 1000)
                remaining = settings.churn_interval_seconds - (time.perf_counter() - started)
                if remaining > 0:
                    time.sleep(remaining)
            time.sleep(1.0)
        finally:
            result = interrupt_load(load, spec)
        delays_ms.sort()
        figures = {
            "requests": float(result.requests),
            "failed": float(result.failed),
            "changes": float(settings.churn_changes),
            "changes_not_serving": float(not_serving),
            "change_p50_ms": _percentile(delays_ms, 50),
            "change_p99_ms": _percentile(delays_ms, 99),
            "change_max_ms": delays_ms[-1] if delays_ms else float("nan"),
        }
        if result.failed:
            figures["failures"] = f"{result.statuses} {result.errors}"  # type: ignore[assignment]
        return figures

    return _with_target(target, [BENCH_HOST], body)


def _poll_until_served(port: int, host: str, started: float, timeout: float) -> float | None:
    """Seconds from `started` to the first 200 for `host`, or None after `timeout`."""
    while time.perf_counter() - started < timeout:
        if http_status(port, host, timeout=1.0) == 200:
            return time.perf_counter() - started
        time.sleep(0.001)
    return None


def _percentile(sorted_values: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list, NaN when it is empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * percent // 100))
    return sorted_values[int(rank) - 1]
