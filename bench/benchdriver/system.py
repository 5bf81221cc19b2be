"""Processes and the machine: start and stop servers, read CPU time and memory from /proc."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class BenchError(Exception):
    """A failure that makes a benchmark result meaningless: a server that does not start,
    a load run that sends no request, a tool that is missing."""


def read_stat(pid: int) -> tuple[int, float, int, float] | None:
    """Return (parent pid, user + system CPU seconds, RSS bytes, user CPU seconds) of one
    process, or None when it is gone. Fields are counted after the `comm` field, which may
    contain spaces."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # proc(5) numbers the fields from 1: 4 is ppid, 14 utime, 15 stime, 24 rss in pages.
    # `fields` starts at field 3, after `pid` and `comm`.
    ppid = int(fields[1])
    user = int(fields[11]) / CLOCK_TICKS
    cpu = user + int(fields[12]) / CLOCK_TICKS
    rss = int(fields[21]) * PAGE_SIZE
    return ppid, cpu, rss, user


def process_tree(root: int) -> list[int]:
    """Return `root` and every live descendant (nginx and HAProxy workers, for example)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = read_stat(int(entry))
        if stat is not None:
            children.setdefault(stat[0], []).append(int(entry))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


@dataclass
class Usage:
    """CPU seconds and resident memory summed over a process tree."""

    cpu_seconds: float
    rss_bytes: int
    # The user-space part of `cpu_seconds`; the rest is time in the kernel.
    user_seconds: float = 0.0


def tree_usage(root: int) -> Usage:
    """Sum CPU time (all threads, user and system) and RSS over `root` and its descendants.

    CPU time of descendants that already exited is not counted. The callers measure trees
    whose processes live through the measurement, which is true except during reloads."""
    cpu, rss, user = 0.0, 0, 0.0
    for pid in process_tree(root):
        stat = read_stat(pid)
        if stat is not None:
            cpu += stat[1]
            rss += stat[2]
            user += stat[3]
    return Usage(cpu, rss, user)


class MemorySampler:
    """Peak RSS of a process tree over the calls to `sample()`."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak = 0

    def sample(self) -> None:
        self.peak = max(self.peak, tree_usage(self.root).rss_bytes)


class Processes:
    """Every server process the driver started, so that each is stopped by its own id."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen] = []

    def start(
        self, argv: list[str], log: Path, cpus: str | None, env: dict | None = None
    ) -> subprocess.Popen:
        """Start `argv` pinned to `cpus` (a taskset list such as "0"), output to `log`."""
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as output:
            process = subprocess.Popen(
                argv,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self._started.append(process)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 10.0) -> int | None:
        """Stop one process and its session: SIGTERM, then SIGKILL after `timeout`. Returns
        its exit status, negative for the signal that ended it, as `Popen.returncode`."""
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(5)
        # nginx and HAProxy workers leave with their master, but a worker still finishing
        # requests after a reload can outlive it for a moment.
        _signal_group(process.pid, signal.SIGKILL)
        if process in self._started:
            self._started.remove(process)
        return process.returncode

    def stop_all(self) -> None:
        for process in list(self._started):
            self.stop(process, timeout=5)


def _signal_group(pid: int, signum: int) -> None:
    # Each server runs in its own session (start_new_session), whose group id is its pid, so
    # this reaches only processes this driver started.
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(check, timeout: float, what: str, process: subprocess.Popen | None = None):
    """Poll `check()` every 20 ms until it returns a true value, which is returned.

    Raises BenchError naming `what` when `timeout` seconds pass or `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BenchError(f"{what}: the process exited with status {process.returncode}")
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.02)
    raise BenchError(f"{what}: timed out after {timeout:.0f} s")


def cpu_count() -> int:
    return os.cpu_count() or 1


def machine_description() -> dict[str, str]:
    """nproc, CPU model, memory and kernel, for the results page."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        if match:
            memory = f"{int(match.group(1)) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": str(cpu_count()),
        "cpu": model,
        "memory": memory,
        "kernel": platform.release(),
    }


def tool_version(argv: list[str]) -> str:
    """First line of a tool's version output, or "not installed"."""
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return "not installed"
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    text = (result.stdout + result.stderr).strip()
    return text.splitlines()[0] if text else "unknown"
