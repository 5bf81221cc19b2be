"""Run every case against every target and print the results table.

Usage (run.sh passes these): python3 -m benchdriver --oha PATH [--gangway PATH] [--quick]
[--runs N] [--cases LIST] [--targets LIST] [--docs FILE]."""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import time
from pathlib import Path

from . import cases, compiler, configs, report, system
from .system import BenchError, Processes
from .targets import Direct, Gangway, Haproxy, Nginx, Upstream, gangway_supports_run

# Cases in run order, and the targets each applies to. Route scale runs only on Gangway; the
# upstream has no routes to change, so it is not in the churn case.
PROXY_CASES = {
    "http1_connections": (cases.http1_connections, ["direct", "nginx", "haproxy", "gangway"]),
    "http1_rate": (cases.http1_rate, ["direct", "nginx", "haproxy", "gangway"]),
    "h2_steady": (cases.h2_steady, ["direct", "nginx", "haproxy", "gangway"]),
    "tls_handshakes": (cases.tls_handshakes, ["direct", "nginx", "haproxy", "gangway"]),
    "large_body": (cases.large_body, ["direct", "nginx", "haproxy", "gangway"]),
    "idle_connections": (cases.idle_connections, ["direct", "nginx", "haproxy", "gangway"]),
    "route_scale": (None, ["gangway"]),
    "churn": (cases.churn, ["nginx", "haproxy", "gangway"]),
}
ALL_CASES = ["compiler", *PROXY_CASES]

RESULTS_BEGIN = "<!-- results:begin -->"
RESULTS_END = "<!-- results:end -->"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchdriver", description=__doc__)
    parser.add_argument("--oha", type=Path, required=True, help="path of the oha binary")
    parser.add_argument("--gangway", type=Path, help="path of the gangway binary (release build)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[2],
                        help="repository root, for the compiler benchmarks")
    parser.add_argument("--work", type=Path, default=Path("bench/.work"),
                        help="directory for configurations, logs and results")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds per case and one run; checks that nothing breaks")
    parser.add_argument("--runs", type=int, help="runs per figure, whose median is reported "
                        "(default 3, or 1 with --quick)")
    parser.add_argument("--cases", default=",".join(ALL_CASES),
                        help=f"comma-separated cases (default all: {','.join(ALL_CASES)})")
    parser.add_argument("--targets", default="direct,nginx,haproxy,gangway",
                        help="comma-separated targets (default direct,nginx,haproxy,gangway)")
    parser.add_argument("--proxy-cpus", default="0", help="taskset CPU list for the proxies")
    parser.add_argument("--client-cpus", default="1",
                        help="taskset CPU list for the load generator, the upstream and this driver")
    parser.add_argument("--docs", type=Path, help="Markdown file whose results section to rewrite")
    parser.add_argument("--command", default="", help="the command line to record in the results")
    return parser.parse_args(argv)


def raise_file_limit(needed: int) -> None:
    """Raise this process's open file limit, which every server and client inherits, to the
    hard limit, and fail when that is below `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(f"the open file limit is {hard}, below the {needed} this run needs; "
                         f"raise it with ulimit -Hn")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # Ctrl-C and SIGTERM end the run through the `finally` below, which stops every server
    # started; a shell may have started this process with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    settings = cases.Settings.quick() if args.quick else cases.Settings()
    runs = args.runs or (1 if args.quick else 3)
    selected_cases = [case for case in args.cases.split(",") if case]
    unknown = set(selected_cases) - set(ALL_CASES)
    if unknown:
        print(f"unknown cases: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    selected_targets = [target for target in args.targets.split(",") if target]
    if system.cpu_count() < 2:
        args.proxy_cpus = args.client_cpus = "0"
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)

    # Each idle connection uses a descriptor in the client and one in the proxy, or in the
    # upstream nginx when it is the direct target. 2,000 more cover everything else.
    raise_file_limit(settings.idle_connections + 2_000)

    notes: list[str] = []
    gangway_binary = args.gangway.resolve() if args.gangway else None
    if "gangway" in selected_targets:
        if gangway_binary is None or not gangway_binary.exists():
            notes.append("gangway: not measured, no binary given")
            selected_targets.remove("gangway")
        elif not gangway_supports_run(gangway_binary):
            notes.append(f"gangway: not measured, {gangway_binary} has no `run` command yet")
            selected_targets.remove("gangway")

    results = report.Results()
    compiler_figures: dict | None = None
    processes = Processes()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    started = time.monotonic()
    try:
        if "compiler" in selected_cases:
            print("== compiler benchmarks (cargo bench)", flush=True)
            try:
                compiler_figures = compiler.run_compiler_benchmarks(
                    args.repo, work / "logs" / "compiler.log", args.quick, args.proxy_cpus)
            except BenchError as error:
                results.fail("compiler", "gangway", str(error))
                print(f"   failed: {error}", flush=True)

        tls = configs.make_certificate(work / "tls")
        upstream = Upstream(processes, work, args.client_cpus, tls)
        upstream.start()
        targets = {
            "direct": Direct(processes, work, args.client_cpus, tls),
            "nginx": Nginx(processes, work, args.proxy_cpus, tls),
            "haproxy": Haproxy(processes, work, args.proxy_cpus, tls),
        }
        if "gangway" in selected_targets:
            targets["gangway"] = Gangway(gangway_binary, processes, work, args.proxy_cpus, tls)
        context = cases.Context(oha=args.oha.resolve(), work=work, settings=settings)

        for case in selected_cases:
            if case == "compiler":
                continue
            function, applies_to = PROXY_CASES[case]
            names = [name for name in applies_to if name in selected_targets]
            for run in range(runs):
                for name in names:
                    _run_one(case, function, context, targets[name], run, runs, settings, results)
        upstream.stop()
    finally:
        processes.stop_all()

    load_after = Path("/proc/loadavg").read_text().split()[:3]
    rows = report.build_rows(results, compiler_figures)
    table = report.render_text(rows, quick=args.quick)
    print()
    print(table)
    for note in notes:
        print(f"note: {note}")
    failures = [(case, target, message) for case, by_target in results.errors.items()
                for target, message in by_target.items()]
    for case, target, message in failures:
        print(f"FAILED {case} on {target}: {message}")

    record = {
        "quick": args.quick, "runs": runs, "settings": settings.__dict__,
        "machine": system.machine_description(), "versions": tool_versions(args),
        "load_average_before": load_before, "load_average_after": load_after,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "runs_by_case": results.runs, "errors": results.errors, "compiler": compiler_figures,
        "notes": notes, "command": args.command,
    }
    (work / "results.json").write_text(json.dumps(record, indent=1, default=str))
    markdown = results_markdown(record, rows, failures)
    (work / "results.md").write_text(markdown)
    if args.docs:
        update_docs(args.docs, markdown)

    checks = sum(len(by_target) for by_target in results.runs.values()) + len(failures)
    checks += 1 if compiler_figures else 0
    print(f"bench: {checks - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


def _run_one(case, function, context, target, run, runs, settings, results) -> None:
    label = f"== {case} on {target.name}, run {run + 1}/{runs}"
    print(label, flush=True)
    try:
        if case == "route_scale":
            # Two figures per run: few routes, then many.
            small = cases.route_scale(context, target, 10)
            large = cases.route_scale(context, target, settings.scale_ingresses)
            results.add("scale_small", target.name, small)
            results.add("scale_large", target.name, large)
            print(f"   10 Ingresses: {summary(small)}", flush=True)
            print(f"   {settings.scale_ingresses} Ingresses: {summary(large)}", flush=True)
            return
        figures = function(context, target)
        results.add(case, target.name, figures)
        print(f"   {summary(figures)}", flush=True)
    except (BenchError, OSError) as error:
        failed_case = "scale_large" if case == "route_scale" else case
        results.fail(failed_case, target.name, str(error))
        print(f"   failed: {error}", flush=True)
        target.stop()


def summary(figures: dict) -> str:
    return ", ".join(
        f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in figures.items()
    )


def tool_versions(args: argparse.Namespace) -> dict[str, str]:
    versions = {
        "nginx": system.tool_version(["nginx", "-v"]),
        "haproxy": system.tool_version(["haproxy", "-v"]),
        "oha": system.tool_version([str(args.oha), "--version"]),
        "openssl": system.tool_version(["openssl", "version"]),
        "rustc": system.tool_version(["rustc", "--version"]),
        "python": sys.version.split()[0],
    }
    if args.gangway:
        versions["gangway"] = system.tool_version([str(args.gangway), "--version"])
    return versions


def results_markdown(record: dict, rows: list[report.Row], failures: list) -> str:
    machine = record["machine"]
    lines = [
        f"Measured with `{record['command'] or 'bench/run.sh'}`"
        f" ({'quick mode, ' if record['quick'] else ''}median of {record['runs']} "
        f"run{'s' if record['runs'] != 1 else ''} per figure, {record['minutes']} minutes).",
        "",
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory']} memory, "
        f"Linux {machine['kernel']}.",
        f"- Load average (1, 5, 15 min) before: {' '.join(record['load_average_before'])}, "
        f"after: {' '.join(record['load_average_after'])}.",
        "- Versions: " + "; ".join(f"{name} `{version}`" for name, version in record["versions"].items()) + ".",
        "",
        report.render_markdown(rows, quick=record["quick"]),
        "",
    ]
    for note in record["notes"]:
        lines.append(f"Note: {note}.")
    for case, target, message in failures:
        lines.append(f"- Failed: {case} on {target}: {message}")
    if record["compiler"]:
        lines.append(f"\nThe compiler benchmark's store of 10,000 Ingresses holds "
                     f"{record['compiler']['store_mib']:.1f} MiB of heap.")
    return "\n".join(lines) + "\n"


def update_docs(path: Path, markdown: str) -> None:
    """Replace the text between the results markers of `path` with `markdown`."""
    text = path.read_text()
    begin, end = text.find(RESULTS_BEGIN), text.find(RESULTS_END)
    if begin < 0 or end < begin:
        raise BenchError(f"{path} has no {RESULTS_BEGIN} ... {RESULTS_END} section")
    path.write_text(text[: begin + len(RESULTS_BEGIN)] + "\n" + markdown + text[end:])


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
