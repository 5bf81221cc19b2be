"""Profiles of Gangway under valgrind, for the targets the benchmark shows it missing.

Usage: python3 -m benchdriver.profile {proxy,handshake,idle} --oha PATH --gangway PATH
[--work DIR]

`proxy` runs gangway under callgrind while oha sends HTTP/1.1 requests at a fixed rate, and
prints callgrind_annotate's inclusive costs. `handshake` does the same with a new TLS
connection, so a full TLS 1.3 handshake, for every request. `idle` runs it under massif while idle
connections are held, and prints ms_print's heap tree at the peak. Both are slow: valgrind
runs the program 20 to 100 times slower, which the low request rate allows for."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from . import configs, idle
from .configs import BENCH_HOST
from .load import LoadSpec, run_load
from .system import Processes
from .targets import Gangway, Upstream


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchdriver.profile", description=__doc__)
    parser.add_argument("kind", choices=["proxy", "handshake", "idle"])
    parser.add_argument("--oha", type=Path, required=True)
    parser.add_argument("--gangway", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("bench/.work/profile"))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=200,
                        help="requests per second (proxy, handshake)")
    parser.add_argument("--connections", type=int, default=1000, help="idle connections (idle)")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    output = work / f"{args.kind}.out"

    if args.kind in ("proxy", "handshake"):
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={output}"]
    else:
        wrapper = ["valgrind", "--tool=massif", f"--massif-out-file={output}"]

    processes = Processes()
    try:
        tls = configs.make_certificate(work / "tls")
        upstream = Upstream(processes, work, "1", tls)
        upstream.start()
        gangway = Gangway(args.gangway.resolve(), processes, work, "0", tls, wrapper=wrapper)
        gangway.start([BENCH_HOST])
        if args.kind in ("proxy", "handshake"):
            handshake = args.kind == "handshake"
            port = gangway.ports.https if handshake else gangway.ports.http
            spec = LoadSpec(port=port, connections=10, rate=args.rate, seconds=args.seconds,
                            tls=handshake, new_connection_per_request=handshake)
            result = run_load(args.oha.resolve(), spec, work / "oha.log")
            print(f"{result.requests} requests, {result.failed} failed", file=sys.stderr)
        else:
            opened, still_open, failed, first_error, _ = idle.hold_idle_connections(
                gangway.ports.http, BENCH_HOST, args.connections, 5.0, lambda: None)
            print(f"{opened} connections opened, {still_open} still open, {failed} failed "
                  f"{first_error}", file=sys.stderr)
        # SIGTERM lets gangway shut down, so valgrind writes its output file.
        processes.stop(gangway.process, timeout=120)
    finally:
        processes.stop_all()

    if args.kind in ("proxy", "handshake"):
        report = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", str(output)],
            capture_output=True, text=True, check=True,
        ).stdout
    else:
        report = subprocess.run(["ms_print", str(output)], capture_output=True, text=True,
                                check=True).stdout
    (work / f"{args.kind}.txt").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
