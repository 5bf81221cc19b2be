"""CPU per request of several Gangway builds and nginx, interleaved in one run, for before
and after figures of a change.

Usage: python3 -m benchdriver.compare --oha PATH [--rounds N] [--seconds S] [--floor PATH]
       [GANGWAY...]

Each round runs case 1's HTTP/1.1 load (50 connections, as fast as they go) against nginx,
then against every given binary. The proxy runs on CPU 0, as in the full benchmark. The
output is the proxy's user-space and kernel CPU milliseconds per 10,000 requests.
Interleaving the binaries within each round spreads the machine's noise over all of them
alike.

--floor adds bench/floor's proxy (build it with `cargo build --release --manifest-path
bench/floor/Cargo.toml`; the binary is bench/floor/target/release/floor-proxy) twice to each
round: with hyper's client connections and with the inline client. It shows what Gangway's
design costs without Gangway's features."""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from . import cases, configs
from .system import Processes
from .targets import Floor, Gangway, Nginx, Target, Upstream

FLOOR_CLIENTS = ("hyper", "inline")


def measure(context: cases.Context, target: Target) -> tuple[float, float, float]:
    """Runs case 1 against `target` and returns (requests/s, user ms, system ms per 10k)."""
    figures = cases.http1_connections(context, target)
    user = figures["user_cpu_per_10k"] * 1000
    return figures["rps"], user, figures["cpu_per_10k"] * 1000 - user


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchdriver.compare", description=__doc__)
    parser.add_argument("--oha", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("bench/.work/compare"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--floor", type=Path,
                        help="bench/floor's floor-proxy binary, run with each of its clients")
    parser.add_argument("gangway", type=Path, nargs="*", help="gangway binaries to compare")
    args = parser.parse_args(argv)
    if not args.gangway and args.floor is None:
        parser.error("give at least one gangway binary or --floor")
    for binary in [*args.gangway, *([args.floor] if args.floor else [])]:
        if not binary.is_file():
            parser.error(f"{binary} is not a file")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)

    context = cases.Context(oha=args.oha.resolve(), work=work,
                            settings=cases.Settings(seconds=args.seconds))
    processes = Processes()
    floors = [f"floor-{client}" for client in FLOOR_CLIENTS] if args.floor else []
    names = ["nginx", *floors, *(str(binary) for binary in args.gangway)]
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    try:
        tls = configs.make_certificate(work / "tls")
        Upstream(processes, work, "1", tls).start()
        for round_number in range(1, args.rounds + 1):
            targets: list[tuple[str, Target]] = [("nginx", Nginx(processes, work, "0", tls))]
            if args.floor:
                for client in FLOOR_CLIENTS:
                    floor = Floor(args.floor.resolve(), client, processes, work, "0", tls)
                    targets.append((floor.name, floor))
            for index, binary in enumerate(args.gangway):
                targets.append((str(binary), Gangway(binary.resolve(), processes,
                                                     work / f"gangway-{index}", "0", tls)))
            for name, target in targets:
                figures[name].append(measure(context, target))
                rps, user, system = figures[name][-1]
                print(f"round {round_number}: {name}: {rps:,.0f} requests/s, user {user:.1f} ms, "
                      f"system {system:.1f} ms per 10k requests", file=sys.stderr, flush=True)
    finally:
        processes.stop_all()

    print(f"median of {args.rounds} rounds, CPU ms per 10k requests:")
    print(f"{'proxy':40} {'requests/s':>10} {'user':>7} {'system':>7} {'total':>7}")
    for name in names:
        rps = statistics.median(f[0] for f in figures[name])
        user = statistics.median(f[1] for f in figures[name])
        system = statistics.median(f[2] for f in figures[name])
        print(f"{name:40} {rps:10,.0f} {user:7.1f} {system:7.1f} {user + system:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
