"""Unit tests of the benchmark driver's parsing, arithmetic and report logic.

Run with `python3 -m unittest discover -s bench/tests -t bench`."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import tempfile
import time
import unittest
from contextlib import redirect_stderr
from pathlib import Path
from unittest import mock

from benchdriver import cases, compare, configs, load, profile, report, system, targets, train
from benchdriver.__main__ import RESULTS_BEGIN, RESULTS_END, update_docs


def oha_json(statuses: dict[str, int], errors: dict[str, int]) -> str:
    """An oha `--output-format json` document with the fields the driver reads."""
    return json.dumps({
        "summary": {"total": 2.0, "requestsPerSec": 100.0, "sizePerSec": 300.0},
        "latencyPercentiles": {"p50": 0.001, "p99": 0.004},
        "statusCodeDistribution": statuses,
        "errorDistribution": errors,
    })


class ProfileTest(unittest.TestCase):
    def assert_usage_error(self, argv: list[str]) -> None:
        with self.assertRaises(SystemExit) as raised, redirect_stderr(io.StringIO()):
            profile.main(argv)
        self.assertEqual(raised.exception.code, 2)

    def test_perf_rejects_idle(self):
        # perf samples request loads; the idle profile is a heap profile under massif.
        self.assert_usage_error(["idle", "--perf", "--oha", "oha", "--gangway", "gangway"])

    def test_perf_needs_perf_binary(self):
        argv = ["proxy", "--perf", "--oha", "oha", "--gangway", "gangway"]
        with mock.patch("shutil.which", return_value=None):
            self.assert_usage_error(argv)

    def test_target_needs_perf(self):
        self.assert_usage_error(["proxy", "--target", "nginx", "--oha", "oha"])

    def test_gangway_binary_needed_for_gangway(self):
        self.assert_usage_error(["proxy", "--oha", "oha"])


class CompareTest(unittest.TestCase):
    def assert_usage_error(self, argv: list[str]) -> None:
        with self.assertRaises(SystemExit) as raised, redirect_stderr(io.StringIO()):
            compare.main(argv)
        self.assertEqual(raised.exception.code, 2)

    def test_needs_something_to_compare(self):
        self.assert_usage_error(["--oha", "oha"])

    def test_rejects_a_missing_floor_binary(self):
        with tempfile.TemporaryDirectory() as directory:
            self.assert_usage_error(["--oha", "oha", "--floor", f"{directory}/floor-proxy"])

    def test_floor_serves_loopback_with_the_given_client(self):
        started = []

        class Recorder:
            def start(self, argv, log, cpus, env=None):
                started.append((argv, cpus))

        with tempfile.TemporaryDirectory() as directory:
            floor = targets.Floor(Path("floor-proxy"), "inline", Recorder(), Path(directory),
                                  "0", (Path("tls.crt"), Path("tls.key")))
            floor._launch(["bench.example"], 0)
        [(argv, cpus)] = started
        self.assertEqual(floor.name, "floor-inline")
        self.assertEqual(cpus, "0")
        self.assertEqual(argv[argv.index("--client") + 1], "inline")
        self.assertTrue(argv[argv.index("--listen") + 1].startswith("127.0.0.1:"))
        self.assertEqual(argv[argv.index("--upstream") + 1], f"127.0.0.1:{configs.UPSTREAM.http}")


class ProcTest(unittest.TestCase):
    def test_read_stat_of_this_process(self):
        # Burn some user time, so that the user part is above zero at clock-tick resolution.
        deadline = time.process_time() + 0.05
        while time.process_time() < deadline:
            pass
        ppid, cpu, rss, user = system.read_stat(os.getpid())
        self.assertEqual(ppid, os.getppid())
        self.assertGreater(user, 0.0)
        self.assertGreaterEqual(cpu, user)
        self.assertGreater(rss, 0)

    def test_read_stat_of_missing_process(self):
        # Linux pids stop below 2**22, so this one cannot exist.
        self.assertIsNone(system.read_stat(2**22 + 1))

    def test_stop_returns_the_exit_status(self):
        processes = system.Processes()
        with tempfile.TemporaryDirectory() as directory:
            log = Path(directory) / "log"
            # Exits 0 on SIGTERM, as Gangway does after a graceful shutdown.
            clean = processes.start(["sh", "-c", "trap 'exit 0' TERM; sleep 30 & wait"], log, None)
            plain = processes.start(["sleep", "30"], log, None)
            time.sleep(0.2)
            self.assertEqual(processes.stop(clean), 0)
            self.assertEqual(processes.stop(plain), -15)

    def test_process_tree_includes_child(self):
        child = subprocess.Popen(["sleep", "10"])
        try:
            self.assertIn(child.pid, system.process_tree(os.getpid()))
        finally:
            child.kill()
            child.wait()


class PercentileTest(unittest.TestCase):
    def test_nearest_rank(self):
        values = [float(value) for value in range(1, 101)]
        self.assertEqual(cases._percentile(values, 50), 50.0)
        self.assertEqual(cases._percentile(values, 99), 99.0)
        self.assertEqual(cases._percentile(values, 100), 100.0)

    def test_single_value(self):
        self.assertEqual(cases._percentile([7.0], 99), 7.0)

    def test_empty_is_nan(self):
        self.assertTrue(math.isnan(cases._percentile([], 50)))


class OhaTest(unittest.TestCase):
    def test_failed_counts_statuses_and_errors(self):
        result = load.parse_oha(oha_json({"200": 10, "502": 2}, {"connection reset": 1}))
        self.assertEqual(result.requests, 12)
        self.assertEqual(result.failed, 3)
        self.assertEqual(result.p99_ms, 4.0)

    def test_no_completed_request_is_an_error(self):
        with self.assertRaises(system.BenchError):
            load.parse_oha(oha_json({}, {"connection refused": 5}))

    def test_tls_url_resolves_to_loopback(self):
        spec = load.LoadSpec(port=18443, tls=True, http2=True, streams_per_connection=10)
        argv = load.oha_argv(Path("oha"), spec)
        self.assertIn("bench.example:18443:127.0.0.1:18443", argv)
        self.assertEqual(argv[-1], "https://bench.example:18443/")
        self.assertIn("--http2", argv)

    def test_plain_url_is_loopback_with_host_header(self):
        argv = load.oha_argv(Path("oha"), load.LoadSpec(port=18081, rate=500))
        self.assertEqual(argv[-1], "http://127.0.0.1:18081/")
        self.assertIn("Host: bench.example", argv)
        self.assertIn("--latency-correction", argv)

    def test_body_makes_a_post(self):
        argv = load.oha_argv(Path("oha"), load.LoadSpec(port=18081, body_bytes=4))
        self.assertEqual(argv[argv.index("-m") + 1], "POST")
        self.assertEqual(argv[argv.index("-d") + 1], "xxxx")

    def test_no_body_is_a_get(self):
        argv = load.oha_argv(Path("oha"), load.LoadSpec(port=18081))
        self.assertNotIn("-m", argv)
        self.assertNotIn("-d", argv)


class TrainTest(unittest.TestCase):
    def test_needs_an_existing_binary(self):
        with tempfile.TemporaryDirectory() as directory, \
                self.assertRaises(SystemExit) as raised, redirect_stderr(io.StringIO()):
            train.main(["--oha", "oha", "--gangway", f"{directory}/gangway"])
        self.assertEqual(raised.exception.code, 2)

    def test_check_exit_rejects_unclean_exit(self):
        class Stopper:
            def __init__(self, status):
                self.status = status

            def stop(self, process):
                return self.status

        with tempfile.TemporaryDirectory() as directory:
            tls = (Path("tls.crt"), Path("tls.key"))
            for status, fails in [(0, False), (1, True), (-9, True)]:
                target = targets.Gangway(Path("gangway"), Stopper(status), Path(directory),
                                         "0", tls)
                target.process = mock.Mock()
                target.stop()
                if fails:
                    with self.assertRaises(system.BenchError):
                        train.check_exit(target)
                else:
                    train.check_exit(target)

    def test_body_loads_cover_both_listeners(self):
        loads = train.body_loads(cases.Settings.quick())
        self.assertEqual({(spec.port, spec.tls, spec.http2) for spec in loads},
                         {(configs.GANGWAY.http, False, False),
                          (configs.GANGWAY.https, True, True)})
        self.assertTrue(all(spec.body_bytes > 0 for spec in loads))


class ReportTest(unittest.TestCase):
    def rows_with_rps(self, gangway: float) -> list[report.Row]:
        results = report.Results()
        for target, rps in [("direct", 200.0), ("nginx", 100.0), ("haproxy", 100.0), ("gangway", gangway)]:
            results.add("http1_connections", target, {"rps": rps})
        return [row for row in report.build_rows(results, None)
                if row.case.startswith("1 HTTP/1.1, fixed connections") and row.measure == "requests/s"]

    def test_throughput_target_met(self):
        [row] = self.rows_with_rps(130.0)
        self.assertTrue(row.met)
        self.assertEqual(row.ratio_nginx, "1.30")

    def test_throughput_target_missed(self):
        [row] = self.rows_with_rps(125.0)
        self.assertFalse(row.met)

    def test_quick_run_judges_no_target(self):
        [row] = self.rows_with_rps(125.0)
        [_, quick_line] = report.render_text([row], quick=True).splitlines()[1:]
        [_, full_line] = report.render_text([row]).splitlines()[1:]
        self.assertTrue(quick_line.endswith("not judged (quick)"), quick_line)
        self.assertTrue(full_line.endswith("MISSED"), full_line)
        self.assertIn("| not judged (quick) |", report.render_markdown([row], quick=True))

    def test_missing_figure_is_not_checked(self):
        results = report.Results()
        results.add("http1_connections", "nginx", {"rps": 100.0})
        [row] = [row for row in report.build_rows(results, None) if row.measure == "requests/s"
                 and row.case.startswith("1 HTTP/1.1, fixed connections")]
        self.assertIsNone(row.met)

    def test_median_of_three_runs(self):
        results = report.Results()
        for rps in [10.0, 30.0, 20.0]:
            results.add("h2_steady", "nginx", {"rps": rps})
        self.assertEqual(results.median("h2_steady", "nginx", "rps"), 20.0)

    def test_failed_case_has_no_median(self):
        results = report.Results()
        results.add("churn", "nginx", {"failed": 0.0})
        results.fail("churn", "nginx", "did not start")
        self.assertIsNone(results.median("churn", "nginx", "failed"))


class DocsTest(unittest.TestCase):
    def test_update_replaces_only_results(self):
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "benchmarks.md"
            path.write_text(f"intro\n{RESULTS_BEGIN}\nold\n{RESULTS_END}\nend\n")
            update_docs(path, "new table\n")
            self.assertEqual(path.read_text(), f"intro\n{RESULTS_BEGIN}\nnew table\n{RESULTS_END}\nend\n")

    def test_update_without_markers_fails(self):
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "benchmarks.md"
            path.write_text("no markers\n")
            with self.assertRaises(system.BenchError):
                update_docs(path, "table\n")


class ConfigsTest(unittest.TestCase):
    def test_gangway_ingress_turns_redirect_off(self):
        ingress = configs.gangway_ingress("bench", ["a.bench.example"], extra_paths=1)
        self.assertEqual(ingress["metadata"]["annotations"], {"gangway.dev/ssl-redirect": "false"})
        [rule] = ingress["spec"]["rules"]
        self.assertEqual([path["path"] for path in rule["http"]["paths"]], ["/", "/path-0"])
        self.assertEqual(ingress["spec"]["tls"][0]["hosts"], ["a.bench.example"])

    def test_haproxy_lines_fit_its_word_limit(self):
        hosts = [f"churn-{index}.bench.example" for index in range(120)]
        text = configs.proxy_haproxy(Path("/work"), hosts, Path("/work/bench.pem"))
        acl_lines = [line for line in text.splitlines() if "acl routed_host" in line]
        self.assertEqual(len(acl_lines), 3)
        for line in text.splitlines():
            self.assertLessEqual(len(line.split()), 64, line)

    def test_proxies_listen_on_loopback_only(self):
        with tempfile.TemporaryDirectory() as directory:
            work = Path(directory)
            certificate, key = work / "tls.crt", work / "tls.key"
            texts = [
                configs.upstream_nginx(work, certificate, key),
                configs.proxy_nginx(work, ["bench.example"], certificate, key),
                configs.proxy_haproxy(work, ["bench.example"], work / "bench.pem"),
            ]
        for text in texts:
            binds = [line.split()[1] for line in text.splitlines()
                     if line.strip().startswith(("listen ", "bind "))]
            self.assertTrue(binds)
            for address in binds:
                self.assertTrue(address.startswith("127.0.0.1:"), address)


if __name__ == "__main__":
    unittest.main()
