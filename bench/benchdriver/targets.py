"""The servers under test: the upstream reached directly, nginx, HAProxy and Gangway, each
started from generated configuration and able to change its routes while it serves."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from . import configs
from .configs import BENCH_HOST, Ports
from .system import Processes, wait_until

START_TIMEOUT_SECONDS = 60.0

# Ingresses in each manifest file of the route scale case.
SCALE_INGRESSES_PER_FILE = 500


def http_status(port: int, host: str, path: str = "/", timeout: float = 2.0) -> int | None:
    """Send one GET on a new connection to 127.0.0.1:`port`; return the status, or None when
    the connection fails."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


class Upstream:
    """The one upstream every target forwards to: nginx returning a fixed 200 on every path
    and a 1 MiB file on configs.LARGE_PATH, pinned with the load generator."""

    def __init__(self, processes: Processes, work: Path, cpus: str | None, tls: tuple[Path, Path]):
        self.processes = processes
        self.work = work / "upstream"
        self.cpus = cpus
        self.tls = tls
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        conf = self.work / "nginx.conf"
        conf.write_text(configs.upstream_nginx(self.work, *self.tls))
        argv = ["nginx", "-e", str(self.work / "error.log"), "-c", str(conf)]
        self.process = self.processes.start(argv, self.work / "stdout.log", self.cpus)
        wait_until(
            lambda: http_status(configs.UPSTREAM.http, BENCH_HOST) == 200,
            START_TIMEOUT_SECONDS, "the upstream nginx did not start", self.process,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.processes.stop(self.process)
            self.process = None


class Target:
    """A server the load generator sends requests to. Subclasses start a proxy; `Direct`
    sends the load straight to the upstream."""

    name = ""
    ports: Ports

    def __init__(self, processes: Processes, work: Path, cpus: str | None, tls: tuple[Path, Path]):
        self.processes = processes
        self.work = work / self.name
        self.cpus = cpus
        self.tls = tls
        self.process: subprocess.Popen | None = None
        self.exit_status: int | None = None

    @property
    def root_pid(self) -> int | None:
        """The process whose tree is the proxy (master and workers), or None for Direct."""
        return self.process.pid if self.process is not None else None

    def start(self, hosts: list[str], scale_ingresses: int = 0) -> None:
        """Start serving `hosts`, and wait until a request for BENCH_HOST gets a 200."""
        self.work.mkdir(parents=True, exist_ok=True)
        self._launch(hosts, scale_ingresses)
        wait_until(
            lambda: http_status(self.ports.http, BENCH_HOST) == 200,
            START_TIMEOUT_SECONDS, f"{self.name} did not start serving {BENCH_HOST}",
            self.process,
        )

    def stop(self) -> None:
        """Stop the proxy and record in `exit_status` how it ended (see Processes.stop)."""
        if self.process is not None:
            self.exit_status = self.processes.stop(self.process)
            self.process = None

    def change_routes(self, hosts: list[str]) -> None:
        """Replace the routed hosts the way an operator of this proxy would."""
        raise NotImplementedError

    def _launch(self, hosts: list[str], scale_ingresses: int) -> None:
        raise NotImplementedError


class Direct(Target):
    """No proxy: the load generator reaches the upstream itself."""

    name = "direct"
    ports = configs.UPSTREAM

    def _launch(self, hosts: list[str], scale_ingresses: int) -> None:
        pass


class Nginx(Target):
    """nginx, one worker process, reloaded with `nginx -s reload`."""

    name = "nginx"
    ports = configs.NGINX

    def _write(self, hosts: list[str]) -> Path:
        conf = self.work / "nginx.conf"
        conf.write_text(configs.proxy_nginx(self.work, hosts, *self.tls))
        return conf

    def _launch(self, hosts: list[str], scale_ingresses: int) -> None:
        conf = self._write(hosts)
        argv = ["nginx", "-e", str(self.work / "error.log"), "-c", str(conf)]
        self.process = self.processes.start(argv, self.work / "stdout.log", self.cpus)

    def change_routes(self, hosts: list[str]) -> None:
        conf = self._write(hosts)
        subprocess.run(
            ["nginx", "-e", str(self.work / "error.log"), "-c", str(conf), "-s", "reload"],
            check=True, capture_output=True, timeout=30,
        )


class Haproxy(Target):
    """HAProxy in master-worker mode with one thread, reloaded with SIGUSR2 to the master."""

    name = "haproxy"
    ports = configs.HAPROXY

    def _write(self, hosts: list[str]) -> Path:
        pem = self.work / "bench.pem"
        certificate, key = self.tls
        pem.write_text(certificate.read_text() + key.read_text())
        cfg = self.work / "haproxy.cfg"
        cfg.write_text(configs.proxy_haproxy(self.work, hosts, pem))
        return cfg

    def _launch(self, hosts: list[str], scale_ingresses: int) -> None:
        cfg = self._write(hosts)
        argv = ["haproxy", "-W", "-db", "-S", str(self.work / "master.sock"), "-f", str(cfg)]
        self.process = self.processes.start(argv, self.work / "stdout.log", self.cpus)

    def change_routes(self, hosts: list[str]) -> None:
        self._write(hosts)
        self._wait_for_master()
        os.kill(self.process.pid, signal.SIGUSR2)

    def _wait_for_master(self) -> None:
        """Wait until the master process runs its loop, where it handles SIGUSR2.

        HAProxy 2.6 drops a SIGUSR2 that arrives while the master is still starting or
        re-executing itself after the previous reload, even though the new worker already
        serves. The master CLI socket accepts connections only once the master is back in its
        loop, so a reply to `show proc` means that the next signal reloads. A careful
        operator, or a controller, waits the same way."""
        socket_path = str(self.work / "master.sock")

        def master_answers() -> bool:
            with socket.socket(socket.AF_UNIX) as cli:
                cli.settimeout(2.0)
                cli.connect(socket_path)
                cli.sendall(b"show proc\n")
                return b"master" in cli.recv(4096)

        wait_until(master_answers, 10.0, "the HAProxy master did not answer on its CLI socket",
                   self.process)


class Gangway(Target):
    """Gangway serving a manifest directory, changed by rewriting a manifest file."""

    name = "gangway"
    ports = configs.GANGWAY

    def __init__(self, binary: Path, *args, wrapper: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.binary = binary
        # A command that runs gangway, such as valgrind for a profile.
        self.wrapper = wrapper or []
        self.manifests = self.work / "manifests"

    def _write_changed_routes(self, hosts: list[str]) -> None:
        # Every host but the first, which is in bench.json: a rewrite never touches the route
        # under load.
        changed = [configs.gangway_ingress(f"churn-{i}", [host]) for i, host in enumerate(hosts[1:])]
        configs.write_manifests(self.manifests / "churn.json", changed)

    def _launch(self, hosts: list[str], scale_ingresses: int) -> None:
        if self.manifests.exists():
            for stale in self.manifests.iterdir():
                stale.unlink()
        self.manifests.mkdir(parents=True, exist_ok=True)
        configs.write_manifests(self.manifests / "base.json", configs.gangway_base_manifests(*self.tls))
        configs.write_manifests(
            self.manifests / "bench.json", [configs.gangway_ingress("bench", hosts[:1])]
        )
        self._write_changed_routes(hosts)
        # Spread over several files, as a repository of manifests would hold them.
        for first in range(0, scale_ingresses, SCALE_INGRESSES_PER_FILE):
            last = min(first + SCALE_INGRESSES_PER_FILE, scale_ingresses)
            scale = [
                configs.gangway_ingress(f"scale-{i}", [f"host-{i}.{BENCH_HOST}"], extra_paths=1)
                for i in range(first, last)
            ]
            configs.write_manifests(self.manifests / f"scale-{first}.json", scale)
        argv = [
            *self.wrapper, str(self.binary), "run",
            "--manifests", str(self.manifests),
            "--http-listen", f"127.0.0.1:{self.ports.http}",
            "--https-listen", f"127.0.0.1:{self.ports.https}",
            "--admin-listen", f"127.0.0.1:{self.ports.admin}",
            "--worker-threads", "1",
            "--access-log", "false",
            "--log-level", "warn",
        ]
        self.process = self.processes.start(argv, self.work / "stdout.log", self.cpus)
        wait_until(
            lambda: http_status(self.ports.admin, "localhost", "/readyz") == 200,
            START_TIMEOUT_SECONDS, "gangway /readyz did not return 200", self.process,
        )

    def change_routes(self, hosts: list[str]) -> None:
        self._write_changed_routes(hosts)

    def metrics(self) -> dict[str, float]:
        """Sum of each counter in /metrics over its labels, by metric name."""
        connection = http.client.HTTPConnection("127.0.0.1", self.ports.admin, timeout=5)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
        totals: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_and_labels, _, value = line.rpartition(" ")
            name = name_and_labels.split("{", 1)[0]
            try:
                totals[name] = totals.get(name, 0.0) + float(value)
            except ValueError:
                continue
        return totals


class Floor(Target):
    """bench/floor's proxy: Gangway's HTTP/1.1 design without its features, forwarding every
    request to the upstream. `client` is "hyper" or "inline" (the binary's --client)."""

    ports = configs.FLOOR

    def __init__(self, binary: Path, client: str, *args, **kwargs):
        self.name = f"floor-{client}"
        super().__init__(*args, **kwargs)
        self.binary = binary
        self.client = client

    def _launch(self, hosts: list[str], scale_ingresses: int) -> None:
        argv = [
            str(self.binary),
            "--listen", f"127.0.0.1:{self.ports.http}",
            "--upstream", f"127.0.0.1:{configs.UPSTREAM.http}",
            "--client", self.client,
        ]
        self.process = self.processes.start(argv, self.work / "stdout.log", self.cpus)


def gangway_supports_run(binary: Path) -> bool:
    """True when `binary run --help` succeeds, that is, when this build has the command."""
    try:
        result = subprocess.run(
            [str(binary), "run", "--help"], capture_output=True, timeout=30
        )
    except OSError:
        return False
    return result.returncode == 0


def settle(seconds: float = 0.3) -> None:
    """Give a freshly started server time to finish its start-up work before measuring."""
    time.sleep(seconds)
