"""Profiles of a proxy under load, for the targets the benchmark shows Gangway missing.

Usage: python3 -m benchdriver.profile {proxy,h2,handshake,idle} --oha PATH [--gangway PATH]
       [--seconds S] [--rate N] [--connections N] [--perf [--target PROXY]] [--work DIR]

Without --perf, Gangway runs under valgrind:
  proxy      callgrind while oha sends HTTP/1.1 requests at --rate per second; prints
             callgrind_annotate's inclusive costs.
  h2         the same over HTTP/2 with TLS, on 2 connections that stay open, as in case 2's
             steady state.
  handshake  the same with a new TLS connection, so a TLS 1.3 handshake, for every request.
  idle       massif while --connections idle connections are held; prints ms_print's heap
             tree at the peak.
valgrind runs the program 20 to 100 times slower, which the low request rate allows for.

With --perf, proxy, h2 and handshake run natively instead, with the full-speed load of cases
1 and 2 (no rate limit; 50 HTTP/1.1 connections, or 10 TLS connections), under `perf record`
with the cpu-clock timer and DWARF call graphs. The report lists the functions with the most
samples, the kernel's included when perf may sample it (root, or kernel.perf_event_paranoid
at most 1). --target picks the proxy: gangway, nginx or haproxy. perf writes about 16 MB of
samples per second of load. valgrind cannot show what the processor runs, because ring and
OpenSSL pick their assembly by the CPU's features and valgrind's virtual CPU lacks some of
them (ADX, SHA). So under callgrind the TLS handshake runs slower code than in production."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from . import configs, idle
from .configs import BENCH_HOST
from .load import LoadSpec, run_load
from .system import BenchError, Processes, process_tree
from .targets import Gangway, Haproxy, Nginx, Target, Upstream


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchdriver.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["proxy", "h2", "handshake", "idle"])
    parser.add_argument("--oha", type=Path, required=True, help="the oha binary")
    parser.add_argument("--gangway", type=Path,
                        help="the gangway binary; required unless --target is nginx or haproxy")
    parser.add_argument("--work", type=Path, default=Path("bench/.work/profile"),
                        help="directory for configurations, logs and profiles")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="seconds of load (of sampling with --perf)")
    parser.add_argument("--rate", type=int, default=200,
                        help="requests per second under valgrind (proxy, h2, handshake)")
    parser.add_argument("--connections", type=int, default=1000,
                        help="idle connections (idle)")
    parser.add_argument("--perf", action="store_true",
                        help="sample the native process with perf instead of running valgrind")
    parser.add_argument("--target", choices=["gangway", "nginx", "haproxy"], default="gangway",
                        help="the proxy to profile with --perf")
    args = parser.parse_args(argv)
    if args.target != "gangway" and not args.perf:
        parser.error("--target needs --perf: valgrind profiles only Gangway")
    if args.target == "gangway" and args.gangway is None:
        parser.error("--gangway is required to profile Gangway")
    if args.perf:
        if args.kind == "idle":
            parser.error("--perf profiles request loads: proxy, h2 or handshake")
        if shutil.which("perf") is None:
            parser.error("perf not found: install Debian's linux-perf package")
        return perf_profile(args)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    output = work / f"{args.kind}.out"

    if args.kind != "idle":
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
        if args.kind != "idle":
            handshake = args.kind == "handshake"
            h2 = args.kind == "h2"
            port = gangway.ports.http if args.kind == "proxy" else gangway.ports.https
            spec = LoadSpec(port=port, connections=2 if h2 else 10, rate=args.rate,
                            seconds=args.seconds, tls=handshake or h2, http2=h2,
                            new_connection_per_request=handshake)
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

    if args.kind != "idle":
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


def perf_profile(args: argparse.Namespace) -> int:
    """Samples one proxy under case 1's or case 2's load, natively, with `perf record`."""
    work = (args.work / f"perf-{args.kind}-{args.target}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = work / "perf.data"
    processes = Processes()
    try:
        tls = configs.make_certificate(work / "tls")
        Upstream(processes, work, "1", tls).start()
        target: Target
        if args.target == "gangway":
            target = Gangway(args.gangway.resolve(), processes, work, "0", tls)
        elif args.target == "nginx":
            target = Nginx(processes, work, "0", tls)
        else:
            target = Haproxy(processes, work, "0", tls)
        target.start([BENCH_HOST])
        root = target.root_pid
        assert root is not None, "the target has started"
        pids = ",".join(str(pid) for pid in process_tree(root))
        h2 = args.kind == "h2"
        spec = LoadSpec(port=target.ports.http if args.kind == "proxy" else target.ports.https,
                        connections=10 if args.kind != "proxy" else 50,
                        streams_per_connection=10 if h2 else 1, seconds=args.seconds + 2,
                        tls=args.kind != "proxy", http2=h2,
                        new_connection_per_request=args.kind == "handshake")
        # 1,000 samples per second of CPU time; DWARF unwinding, because the release build
        # keeps no frame pointers. perf stops after `--seconds`, while the load still runs.
        perf_log = work / "perf.log"
        with perf_log.open("w") as log:
            perf = subprocess.Popen(
                ["perf", "record", "-e", "cpu-clock", "-F", "1000", "--call-graph",
                 "dwarf,16384", "-o", str(data), "-p", pids, "--", "sleep", str(args.seconds)],
                stdout=subprocess.DEVNULL, stderr=log)
            result = run_load(args.oha.resolve(), spec, work / "oha.log")
            perf.wait()
        if perf.returncode != 0:
            raise BenchError(f"perf record failed with exit code {perf.returncode}; "
                             f"its messages are in {perf_log}")
        print(f"{args.target}: {result.requests_per_second:,.0f} requests/s, "
              f"{result.failed} failed", file=sys.stderr)
    finally:
        processes.stop_all()

    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym",
         "-g", "none", "--percent-limit", "0.3"],
        capture_output=True, text=True, check=True,
    ).stdout
    (work / "report.txt").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
