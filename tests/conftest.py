"""Fixtures: a real mshared process on a private run dir, and helpers for real child processes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import mshare

VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
#: How long a test waits for something asynchronous (a broker start, a reclaimed session).
DEADLINE = 10.0


def require_tool(name: str, source: str) -> str:
    """A tool from node_modules, the venv or PATH; skipped when missing, but in CI (.ci/run installs
    them all) a missing tool fails the test instead."""
    for directory in (ROOT / "node_modules" / ".bin", VENV_BIN):
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed ({source}); .ci/run installs it")
        pytest.skip(f"{name} is not installed ({source})")
    return found


def wait_for(predicate: Callable[[], bool], timeout: float = DEADLINE, interval: float = 0.01) -> bool:
    """Poll predicate until it is true or the deadline passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def make_run_dir() -> Path:
    """A private run dir that an unprivileged child can still traverse (0755)."""
    path = Path(tempfile.mkdtemp(prefix="mshare-test-", dir="/tmp"))
    path.chmod(0o755)
    return path


class BrokerProcess:
    """A real `mshared` console-script process on its own run dir."""

    def __init__(
        self,
        run_dir: Path,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.log_path = run_dir.parent / f"{run_dir.name}.log"
        self.args = [
            str(VENV_BIN / "mshared"),
            "--run-dir",
            str(run_dir),
            "--metrics-address",
            "127.0.0.1:0",
            "--log-level",
            "debug",
            *(args or []),
        ]
        self.env = {**os.environ, **(env or {})}
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BrokerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, env=self.env, preexec_fn=self.preexec_fn)
        log.close()
        wait_for(lambda: self.proc is None or self.proc.poll() is not None or self.ready(), interval=0.02)
        if self.proc is None or self.proc.poll() is not None or not self.ready():
            raise RuntimeError(f"mshared did not start:\n{self.log()}")
        return self

    def ready(self) -> bool:
        """Both sockets answer (a stale socket file of a killed broker does not)."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            probe.connect(str(self.run_dir / "session.sock"))
        except OSError:
            return False
        finally:
            probe.close()
        with grpc.insecure_channel(f"unix:{self.run_dir / 'mshare.sock'}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def metrics_url(self) -> str:
        """The /metrics address the broker logged (it binds port 0 in tests)."""
        match = re.search(r"metrics serving on (http://\S+/metrics)", self.log())
        assert match, self.log()
        return match.group(1)

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url(), timeout=10) as reply:
            return str(reply.read().decode())

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = DEADLINE) -> int:
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None
        return proc.returncode

    def connect(self, namespace: str = "default") -> mshare.Namespace:
        return mshare.connect(namespace, run_dir=self.run_dir)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = make_run_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
    Path(f"{path}.log").unlink(missing_ok=True)


@pytest.fixture
def start_broker(run_dir: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """Start brokers with extra flags; all are stopped at the end, and a crash fails the test."""
    started: list[BrokerProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, directory: Path | None = None, preexec_fn: Callable[[], None] | None = None
    ) -> BrokerProcess:
        broker = BrokerProcess(directory or run_dir, list(args), env, preexec_fn)
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        alive = broker.proc is not None and broker.proc.poll() is None
        crashed = broker.proc is not None and not alive and broker.proc.returncode not in (0, -signal.SIGTERM)
        broker.stop()
        assert not crashed, f"mshared exited with {broker.proc and broker.proc.returncode}:\n{broker.log()}"
        assert "Traceback" not in broker.log(), broker.log()


@pytest.fixture
def broker(start_broker: Callable[..., BrokerProcess]) -> BrokerProcess:
    return start_broker()


@pytest.fixture
def ns(broker: BrokerProcess) -> Iterator[mshare.Namespace]:
    namespace = broker.connect()
    yield namespace
    namespace.close()


_children: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_children() -> Iterator[None]:
    """Every child a test started is killed (if still running), waited for and its pipes closed."""
    yield
    while _children:
        child = _children.pop()
        if child.poll() is None:
            child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()


def spawn(argv: list[str], env: dict[str, str] | None = None, **kwargs: object) -> subprocess.Popen[str]:
    """A child process with text pipes, reaped after the test."""
    child = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kwargs,  # type: ignore[call-overload]
    )
    _children.append(child)
    return child


def python_child(code: str, *args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.Popen[str]:
    """A separate Python process running code with the project importable."""
    return spawn([sys.executable, "-c", code, *args], env, **kwargs)


def as_user(
    code: str, run_dir: Path, uid: int = 65534, gid: int = 65534, groups: tuple[int, ...] = (), timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run code in a child that imports everything as root, then drops to uid/gid/groups.

    The interpreter may live where the unprivileged uid cannot read, so the
    child (tests/dropped.py) imports all it needs before dropping.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges to another uid")
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "dropped.py"), str(uid), str(gid), ",".join(map(str, groups)), code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "MSHARE_RUN_DIR": str(run_dir)},
        cwd="/",
    )
