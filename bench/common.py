"""What the benchmarks share: a pinned broker of their own, CPU placement, percentiles, output."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
#: On two cores, where the scheduler puts client and server decides latency: pin them apart.
SERVER_CPU = 0
CLIENT_CPU = 1


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def require_two_cpus(parser: argparse.ArgumentParser) -> None:
    """Every benchmark places the broker side and the clients on CPUs of their own."""
    if len(cpus()) < 2:
        parser.error("needs two CPUs to place clients and the broker apart")


def pin_process(pid: int, cpu: int) -> None:
    """Pin every thread of pid (threads created later inherit the placement of their creator)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), {cpu})


def pin_self(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: Sequence[float]) -> dict[str, float]:
    """p50 and p99 in microseconds."""
    return {"p50_us": percentile(samples, 0.5) * 1e6, "p99_us": percentile(samples, 0.99) * 1e6, "n": len(samples)}


@contextlib.contextmanager
def broker(
    *args: str, cpu: int | None = SERVER_CPU, env: dict[str, str] | None = None, nofile: int | None = None
) -> Iterator[Path]:
    """A private mshared (pinned to cpu) on a fresh run dir; yields the run dir.

    nofile sets the broker's RLIMIT_NOFILE (soft and hard; raising the hard
    limit needs root): every region holds a memfd in the broker.
    """

    def limit_fds() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    run_dir = Path(tempfile.mkdtemp(prefix="mshare-bench-"))
    run_dir.chmod(0o755)
    try:
        proc = subprocess.Popen(
            [
                str(BIN / "mshared"),
                "--run-dir",
                str(run_dir),
                "--metrics-address",
                "127.0.0.1:0",
                "--log-level",
                "warning",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            preexec_fn=limit_fds if nofile is not None else None,
        )
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        deadline = time.monotonic() + 15
        while not ((run_dir / "mshare.sock").exists() and (run_dir / "session.sock").exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("mshared did not start")
            time.sleep(0.05)
        time.sleep(0.3)  # let the gRPC server finish starting its threads
        if cpu is not None:
            pin_process(proc.pid, cpu)
        yield run_dir
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def broker_pid(run_dir: Path) -> int:
    return int((run_dir / "mshared.lock").read_text().split()[0])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) all threads of pid have used so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """VmRSS of pid, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


class Clients:
    """Client processes, each `python -c code *argv`, driven by lines over their pipes.

    They inherit this process's CPU affinity (pin it first) and share one
    process group, so kill() ends them all with one signal. Use as a context
    manager: on exit their stdin closes, and every one is reaped (killed if it
    does not exit) and its pipes closed.
    """

    def __init__(self, code: str, argvs: Sequence[Sequence[str]]) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        try:
            for argv in argvs:
                group = self.procs[0].pid if self.procs else 0
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", code, *argv],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        process_group=group,
                    )
                )
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def expect(self, word: str) -> list[list[str]]:
        """One line from each client, which must start with word; the words after it, per client."""
        replies = []
        for proc in self.procs:
            assert proc.stdout is not None
            words = proc.stdout.readline().split()
            if not words or words[0] != word:
                raise RuntimeError(f"client {proc.pid} said {words!r}, expected {word!r} (exit status {proc.poll()})")
            replies.append(words[1:])
        return replies

    def send(self, line: str) -> None:
        """Write line to every client, as close together as possible."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

    def send_each(self, lines: Sequence[str]) -> None:
        """Write one line to each client, in order."""
        for proc, line in zip(self.procs, lines, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL to every client at once (one kill(2) on their process group)."""
        if self.procs:
            os.killpg(self.procs[0].pid, signal.SIGKILL)

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))) for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
