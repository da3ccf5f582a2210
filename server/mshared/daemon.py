"""The daemon's life: run-dir lock, both sockets, health, signals, graceful drain."""

from __future__ import annotations

import fcntl
import logging
import os
import resource
import signal
import socket
import stat
import threading
from concurrent import futures
from pathlib import Path
from types import FrameType
from typing import Any, Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, ProcessCollector, disable_created_metrics

from mshare.v1 import broker_service_pb2, broker_service_pb2_grpc

from . import pages
from .broker import MAX_WATCHES, Broker
from .config import Config
from .memfd import MemFd, memfd_name
from .metrics import BrokerCollector, RpcMetrics, serve
from .regions import AddressSpace, PagePolicy, Region
from .service import SERVICE_NAME, BrokerServicer
from .sessions import SessionServer, remove_stale_socket

log = logging.getLogger(__name__)

#: gRPC worker threads: control-plane calls are short and in memory, but each
#: watch stream holds one thread (MAX_WATCHES of them at most).
GRPC_WORKERS: Final = MAX_WATCHES + 16
#: Descriptors kept free for sockets, logs and the metrics server when
#: estimating how many more regions fit under RLIMIT_NOFILE.
FD_RESERVE: Final = 64


class AlreadyRunning(Exception):
    """Another mshared holds the run directory's lock."""


class UnsafeRunDir(Exception):
    """The run directory is writable by others: no client would trust it."""


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every region holds a memfd); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class RunDirLock:
    """flock on <run_dir>/mshared.lock, held for the daemon's life; it holds our pid for humans."""

    _fd = -1

    def __init__(self, path: Path) -> None:
        self.path = path

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(f"another mshared (pid {holder}) is serving {self.path.parent}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def sd_notify(state: str) -> bool:
    """Tell systemd (Type=notify) about our state, if it asked: a datagram to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", address, exc)
            return False
    return True


def make_backing(region: Region, path: str) -> MemFd:
    if region.policy is PagePolicy.THP and not pages.thp_allowed():
        log.warning(
            "region %s:%s asks for thp, but shmem_enabled is %s: it gets 4 KiB pages until "
            "/sys/kernel/mm/transparent_hugepage/shmem_enabled allows advise",
            region.namespace,
            path,
            pages.thp_setting(),
        )
    return MemFd(memfd_name(region.namespace, path), region.size, region.policy)


class Daemon:
    """mshared: both sockets over one Broker, from bind to drain."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.fd_limit = raise_fd_limit()
        space = AddressSpace(config.arena_start, config.arena_size, config.min_address, config.max_address)
        self.broker = Broker(config.namespaces, space, make_backing, policies=pages.supported_policies())
        self.sessions = SessionServer(self.broker, config.session_socket, config.spin_us)
        self.health = health.HealthServicer()
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series add nothing here
        self.registry = CollectorRegistry()
        self.registry.register(BrokerCollector(self.broker, self.sessions, self.region_capacity))
        ProcessCollector(namespace="mshare", registry=self.registry)
        methods = [m.name for m in broker_service_pb2.DESCRIPTOR.services_by_name["BrokerService"].methods]
        self.rpc_metrics = RpcMetrics(self.registry, [*methods, "grpc.health.v1.Health/Check"])
        self.metrics_port = 0
        self._metrics_server: Any = None
        self._lock = RunDirLock(config.lock_file)
        self._grpc: grpc.Server | None = None
        self._stop = threading.Event()
        self._signals = 0

    def region_capacity(self) -> int:
        """Regions that still fit under the descriptor limit (each holds one memfd, two once read-only attached)."""
        return max(0, self.fd_limit - open_fd_count() - FD_RESERVE)

    def start(self) -> None:
        """Lock the run dir, bind both sockets, then report SERVING; on failure leave nothing behind."""
        config = self.config
        config.run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        mode = config.run_dir.stat().st_mode
        if mode & stat.S_IWOTH:
            raise UnsafeRunDir(
                f"run dir {config.run_dir} is writable by others (mode {stat.S_IMODE(mode):04o}): clients refuse it, "
                "since anyone could replace its sockets; use a directory only the broker can write"
            )
        self._lock.acquire()
        try:
            self._bind_and_serve()
        except BaseException:
            self._close()  # nothing was served: no drain to log or announce, only cleanup
            raise

    def _bind_and_serve(self) -> None:
        config = self.config
        for status_name in ("", SERVICE_NAME):
            self.health.set(status_name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.sessions.bind(config.socket_mode, config.socket_group)
        self._grpc = self._bind_grpc()
        self._metrics_server, self.metrics_port = serve(self.registry, config.metrics_host, config.metrics_port)
        self.sessions.start()
        self._grpc.start()
        for status_name in ("", SERVICE_NAME):
            self.health.set(status_name, health_pb2.HealthCheckResponse.SERVING)
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving {config.run_dir}")
        log.info(
            "mshared serving %s: arena %#x+%#x, namespaces %s, fd limit %d, page policies %s, shmem thp %s",
            config.run_dir,
            config.arena_start,
            config.arena_size,
            ", ".join(ns.name for ns in config.namespaces),
            self.fd_limit,
            ", ".join(p.value for p in PagePolicy if p in self.broker.policies),
            pages.thp_setting(),
        )

    def _bind_grpc(self) -> grpc.Server:
        config = self.config
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS, thread_name_prefix="mshare-grpc"),
            interceptors=[self.rpc_metrics],
        )
        broker_service_pb2_grpc.add_BrokerServiceServicer_to_server(  # type: ignore[no-untyped-call]
            BrokerServicer(self.broker, self.region_capacity), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        path = config.grpc_socket
        remove_stale_socket(path)
        old = os.umask(0o177)
        try:
            server.add_insecure_port(f"unix:{path}")
        finally:
            os.umask(old)
        if config.socket_group is not None:
            os.chown(path, -1, config.socket_group)
        os.chmod(path, config.socket_mode)
        return server

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags here: the drain runs in the main thread. A second signal exits at once.
        self._signals += 1
        if self._signals > 1:
            os._exit(128 + signum)
        self._stop.set()

    def wait(self) -> None:
        while not self._stop.wait(3600):
            pass

    def drain(self) -> None:
        """NOT_SERVING, stop accepting, let in-flight calls finish within the grace period, clean up."""
        log.info("mshared draining: grace %.1fs", self.config.grace)
        sd_notify("STOPPING=1")
        self._close()
        log.info("mshared stopped")

    def _close(self) -> None:
        """Stop whatever has started, remove the sockets, release the run-dir lock."""
        self.health.enter_graceful_shutdown()
        self.sessions.stop_accepting()
        self.broker.close_watches()
        if self._grpc is not None:
            self._grpc.stop(self.config.grace).wait(self.config.grace + 1)
        self.sessions.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        remove_stale_socket(self.config.grpc_socket)
        self._lock.release()

    def run(self) -> None:
        self.install_signal_handlers()
        self.start()
        try:
            self.wait()
        finally:
            self.drain()
