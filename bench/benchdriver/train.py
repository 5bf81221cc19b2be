"""The training load of a profile-guided build of Gangway (bench/pgo-build.sh).

Usage: python3 -m benchdriver.train --oha PATH --gangway PATH [--work DIR]

`--gangway` is a binary built with `cargo pgo build`, which counts how often each branch and
function runs and writes the counts when the process exits. This runs every proxy case of
the benchmark in quick mode against it, one Gangway process per case as in the benchmark.
Two more loads train the forwarding of request bodies, which no case sends: POST requests
with a 16 KiB body over HTTP/1.1, and over HTTP/2 with TLS. Nothing is measured. A load
with failed requests stops the training, because a profile of error paths would optimize
the wrong code, and so does a Gangway process that does not exit cleanly.

Code that runs in no load here is compiled as cold: smaller and slower. The loads cover what
the benchmark measures, plus request bodies. WebSocket tunnels, Gateway API routes and
upstream TLS are not trained."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import cases, configs, system
from .__main__ import raise_file_limit
from .configs import BENCH_HOST
from .load import LoadSpec, run_load
from .system import BenchError, Processes
from .targets import Gangway, Upstream

# Every proxy case of the benchmark, in the order of its report.
CASES = (
    cases.http1_connections,
    cases.http1_rate,
    cases.h2_steady,
    cases.tls_handshakes,
    cases.large_body,
    cases.idle_connections,
    cases.churn,
)

BODY_BYTES = 16 * 1024


def body_loads(settings: cases.Settings) -> list[LoadSpec]:
    """POST loads with a request body: HTTP/1.1 in plain text, and HTTP/2 over TLS."""
    return [
        LoadSpec(port=configs.GANGWAY.http, connections=settings.connections,
                 seconds=settings.seconds, body_bytes=BODY_BYTES),
        LoadSpec(port=configs.GANGWAY.https, connections=settings.h2_connections,
                 streams_per_connection=settings.h2_streams, seconds=settings.seconds,
                 tls=True, http2=True, body_bytes=BODY_BYTES),
    ]


def check_exit(target: Gangway) -> None:
    """Raise BenchError unless `target` exited with status 0. A killed Gangway process writes
    no counts, so its case would be missing from the profile."""
    if target.exit_status != 0:
        raise BenchError(f"gangway exited with status {target.exit_status} instead of 0, so "
                         f"it wrote no counts (its log: {target.work / 'stdout.log'})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchdriver.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--oha", type=Path, required=True)
    parser.add_argument("--gangway", type=Path, required=True,
                        help="a gangway binary built with `cargo pgo build`")
    parser.add_argument("--work", type=Path, default=Path("bench/.work/train"))
    args = parser.parse_args(argv)
    if not args.gangway.is_file():
        parser.error(f"{args.gangway} is not a file")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings = cases.Settings.quick()
    raise_file_limit(settings.idle_connections + 2_000)
    context = cases.Context(oha=args.oha.resolve(), work=work, settings=settings)
    binary = args.gangway.resolve()
    # As in bench/run.sh: the proxy on CPU 0, the upstream and oha on CPU 1.
    proxy_cpus, client_cpus = ("0", "1") if system.cpu_count() >= 2 else ("0", "0")
    processes = Processes()
    try:
        tls = configs.make_certificate(work / "tls")
        Upstream(processes, work, client_cpus, tls).start()

        def gangway() -> Gangway:
            return Gangway(binary, processes, work, proxy_cpus, tls)

        for case in CASES:
            print(f"train: {case.__name__}", file=sys.stderr, flush=True)
            target = gangway()
            figures = case(context, target)
            if figures.get("failed") or figures.get("changes_not_serving"):
                raise BenchError(f"{case.__name__}: {figures.get('failed', 0):.0f} requests "
                                 f"failed, {figures.get('changes_not_serving', 0):.0f} "
                                 "route changes not serving")
            check_exit(target)
        print("train: route_scale", file=sys.stderr, flush=True)
        target = gangway()
        cases.route_scale(context, target, settings.scale_ingresses)
        check_exit(target)
        for spec in body_loads(settings):
            kind = "HTTP/2 over TLS" if spec.http2 else "HTTP/1.1"
            print(f"train: POST with a body over {kind}", file=sys.stderr, flush=True)
            target = gangway()
            target.start([BENCH_HOST], 0)
            try:
                result = run_load(context.oha, spec, work / "logs" / "train-body.log")
            finally:
                target.stop()
            if result.failed:
                raise BenchError(f"POST over {kind}: {result.failed} of {result.requests} "
                                 f"requests failed: {result.statuses} {result.errors}")
            check_exit(target)
    except BenchError as error:
        print(f"train: {error}", file=sys.stderr)
        return 1
    finally:
        processes.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
