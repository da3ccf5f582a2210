"""What the benchmarks share: a pinned broker of their own, CPU placement, percentiles, output."""

from __future__ import annotations

import contextlib
import json
import os
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
def broker(*args: str, cpu: int | None = SERVER_CPU, env: dict[str, str] | None = None) -> Iterator[Path]:
    """A private mshared (pinned to cpu) on a fresh run dir; yields the run dir."""
    run_dir = Path(tempfile.mkdtemp(prefix="mshare-bench-"))
    run_dir.chmod(0o755)
    proc = subprocess.Popen(
        [str(BIN / "mshared"), "--run-dir", str(run_dir), "--metrics-address", "127.0.0.1:0", "--log-level", "warning", *args],
        stdout=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
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
