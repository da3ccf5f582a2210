"""Namespace and connect(): the session, the gRPC channel, and the os-like verbs."""

from __future__ import annotations

import errno
import os
import stat as stat_module
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from . import __version__
from . import region as region_module
from ._session import SPIN_US, Session, close_all
from .errors import BrokerUnavailableError, ForkedError, ProtocolError, SessionLostError, os_error
from .records import (
    ACCESS_NAMES,
    POLICY_NAMES,
    POLICY_NUMBERS,
    Attachment,
    Event,
    HugePages,
    Info,
    SessionInfo,
    Stat,
    event_of,
    stat_of,
)
from .region import MAPPINGS, PAGE_SIZES, Region
from .v1 import broker_service_pb2 as pb
from .v1 import broker_service_pb2_grpc, resources_pb2, session_pb2

__all__ = [
    "Attachment",
    "Event",
    "HugePages",
    "Info",
    "Namespace",
    "SessionInfo",
    "Stat",
    "Watch",
    "check_path",
    "connect",
    "find_run_dir",
]

#: Metadata binding a gRPC call to the session, and ordering it after the
#: session's earlier requests (docs/protocol.md).
TOKEN_KEY: Final = "x-mshare-session"
AFTER_KEY: Final = "x-mshare-after"

SESSION_SOCKET: Final = "session.sock"
GRPC_SOCKET: Final = "mshare.sock"

#: Entries asked for per ListEntries page.
LIST_PAGE: Final = 1000

T = TypeVar("T")


_READ_ONLY: Final = resources_pb2.ACCESS_READ_ONLY
_READ_WRITE: Final = resources_pb2.ACCESS_READ_WRITE
_THP: Final = resources_pb2.PAGE_POLICY_THP


def check_path(path: object) -> str:
    """Refuse, before any call, what no broker could accept."""
    if type(path) is str and path[:1] == "/" and "\0" not in path:
        return path
    if not isinstance(path, str):
        raise TypeError(f"path must be str, not {type(path).__name__}")
    if not path:
        raise ValueError("path must not be empty")
    if not path.startswith("/"):
        raise ValueError(f"path must be absolute: {path!r}")
    if "\0" in path:
        raise ValueError("path must not contain NUL")
    return path


def _check_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be int, not {type(value).__name__}")
    return value


def _check_mode(mode: object) -> int:
    value = _check_int(mode, "mode")
    if not 0 <= value <= 0o7777:
        raise ValueError(f"mode must be within 0o0..0o7777: {mode!r}")
    return value


def _policy_number(page_size: object) -> resources_pb2.PagePolicy:
    if page_size is None:
        return resources_pb2.PAGE_POLICY_UNSPECIFIED
    if not isinstance(page_size, str):
        raise TypeError(f"page_size must be str or None, not {type(page_size).__name__}")
    try:
        return POLICY_NUMBERS[page_size]
    except KeyError:
        raise ValueError(f"page_size must be one of {', '.join(PAGE_SIZES)}: {page_size!r}") from None


def _check_region(
    path: object, size: object, mode: object, start: object, page_size: object
) -> tuple[int, int, resources_pb2.PagePolicy]:
    """create()'s arguments, refused before any call when no broker could accept them."""
    check_path(path)
    if _check_int(size, "size") <= 0:
        raise ValueError(f"size must be positive: {size}")
    if start is not None and _check_int(start, "start") <= 0:
        raise ValueError(f"start must be a positive address: {start}")
    return _check_mode(mode), start or 0, _policy_number(page_size)  # type: ignore[return-value]


def _candidate_run_dirs() -> list[Path]:
    uid = os.getuid()
    dirs = [Path("/run/mshare")]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        dirs.append(Path(runtime) / "mshare")
    dirs.append(Path(f"/tmp/mshare-{uid}"))
    return dirs


def _spin_us() -> int:
    """$MSHARE_CLIENT_SPIN_US: this process's low-latency mode (poll for replies this long before sleeping)."""
    text = os.environ.get(SPIN_US, "0") or "0"
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{SPIN_US} must be a number of microseconds, not {text!r}") from None
    if not 0 <= value <= 10_000:
        raise ValueError(f"{SPIN_US} must be within 0..10000 microseconds, not {value}")
    return value


def find_run_dir(run_dir: str | os.PathLike[str] | None = None) -> Path:
    """run_dir, else $MSHARE_RUN_DIR, else the first default run dir holding session.sock.

    Refuses a run dir that others may write to: whoever can replace the socket
    could pose as the broker.
    """
    if run_dir is None and os.environ.get("MSHARE_RUN_DIR"):
        run_dir = os.environ["MSHARE_RUN_DIR"]
    if run_dir is not None:
        found = Path(run_dir)
    else:
        candidates = _candidate_run_dirs()
        holding = [d for d in candidates if (d / SESSION_SOCKET).exists()]
        if not holding:
            tried = ", ".join(str(d / SESSION_SOCKET) for d in candidates)
            raise BrokerUnavailableError(errno.ENOENT, f"no mshare broker found (tried {tried}); set MSHARE_RUN_DIR", tried)
        found = holding[0]
    try:
        mode = found.stat().st_mode
    except OSError as exc:
        raise BrokerUnavailableError(exc.errno or errno.ENOENT, f"no mshare run dir: {exc.strerror}", str(found)) from None
    if mode & stat_module.S_IWOTH:
        raise BrokerUnavailableError(
            errno.EPERM, f"refusing run dir writable by others (mode {stat_module.S_IMODE(mode):04o})", str(found)
        )
    return found


class Namespace:
    """A session with the broker, in one namespace: the os-like verbs on its tree.

    Use as a context manager or call close(). Thread-safe. Regions opened
    through it keep it alive; close() closes them first. After fork() the
    child must call mshare.connect() again.
    """

    _session: Session | None = None
    _channel: grpc.Channel | None = None

    def __init__(self, namespace: str, run_dir: Path) -> None:
        self._pid = region_module.pid
        self.run_dir = run_dir
        session_path = str(run_dir / SESSION_SOCKET)
        try:
            self._session = Session(session_path, _spin_us())
        except OSError as exc:
            raise BrokerUnavailableError(
                exc.errno or errno.ECONNREFUSED, f"cannot reach the mshare broker: {exc.strerror}", session_path
            ) from None
        try:
            hello = self._session.hello(namespace, __version__)
            MAPPINGS.reserve_arena(hello.namespace.arena_start, hello.namespace.arena_size_bytes)
        except BaseException:
            self._session.close()
            raise
        self.name = hello.namespace.name
        self.session_id = hello.session_id
        self.epoch = hello.epoch
        self.uid, self.gid = hello.identity.uid, hello.identity.gid
        self.alignment = hello.namespace.alignment_bytes
        self._token = hello.token
        self._broker_key = str(run_dir.resolve())
        # Open handles by attachment id, weakly: a handle nobody holds is closed by its __del__.
        self._regions: dict[int, weakref.ref[Region]] = {}
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._channel = grpc.insecure_channel(f"unix:{run_dir / GRPC_SOCKET}")
        self._stub = broker_service_pb2_grpc.BrokerServiceStub(self._channel)  # type: ignore[no-untyped-call]

    # -- plumbing -----------------------------------------------------------------

    def _live_session(self) -> Session:
        if self._pid != region_module.pid:
            raise ForkedError(
                f"this mshare session belongs to process {self._pid}; after fork() call mshare.connect() again in the child"
            )
        session = self._session
        if session is None:
            raise ValueError("namespace is closed")
        return session

    def _rpc(self, method: Callable[..., T], request: Any, path: str = "") -> T:
        session = self._live_session()
        metadata = ((TOKEN_KEY, self._token), (AFTER_KEY, str(session.last_sent)))
        try:
            return method(request, metadata=metadata)
        except grpc.RpcError as exc:
            raise self._translate(exc, path) from None

    def _translate(self, exc: grpc.RpcError, path: str) -> OSError:
        status = rpc_status.from_call(exc)
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    if info.reason == "ENOTCONN":
                        return SessionLostError(errno.ENOTCONN, status.message, str(self.run_dir / GRPC_SOCKET))
                    return os_error(info.reason, status.message, info.metadata.get("path", path))
        code = exc.code()
        socket_path = str(self.run_dir / GRPC_SOCKET)
        if code == grpc.StatusCode.UNAVAILABLE:
            return BrokerUnavailableError(errno.ECONNREFUSED, f"cannot reach the mshare broker: {exc.details()}", socket_path)
        return OSError(errno.EIO, f"{code.name}: {exc.details()}", path)

    def _adopt(self, session: Session, request_id: int, path: str, readonly: bool) -> Region:
        """Wait for a sent attach or create's reply and map what it hands over; on any failure end the attachment.

        The handle and its registry entry are made first, while the broker works:
        less to do once its reply wakes this thread.
        """
        try:
            region = Region(self, path, readonly)
            ref = weakref.ref(region)
        except BaseException:
            session.abandon(request_id)
            raise
        reply, fds = session.reply(request_id)
        desc = reply.attach.descriptor  # its path is the one asked for: not read again (each field read costs)
        attachment_id, region_id, policy = desc.attachment_id, desc.region_id, desc.page_policy
        try:
            if len(fds) != 1:
                close_all(fds)
                raise ProtocolError(errno.EPROTO, f"expected one memfd with the region, got {len(fds)}")
            mapping = MAPPINGS.acquire(
                (self._broker_key, self.epoch, region_id),
                desc.start,
                desc.size_bytes,
                fds[0],
                not region.readonly,
                path,
                policy == _THP,
            )
        except BaseException:
            self._detach(attachment_id)
            raise
        region._attach(mapping, region_id, attachment_id, POLICY_NAMES.get(policy, "4k"))
        self._regions[attachment_id] = ref
        return region

    def _detach(self, attachment_id: int) -> None:
        """End an attachment: one packet, no reply; later calls of this session observe it."""
        session = self._session
        if session is not None:
            session.detach(attachment_id)  # nothing to send once the session has ended: so have its attachments
        self._regions.pop(attachment_id, None)

    # -- regions ------------------------------------------------------------------

    def create(
        self, path: str, size: int, *, mode: int = 0o600, start: int | None = None, page_size: str | None = None
    ) -> Region:
        """Create a region (O_CREAT|O_EXCL) and map it read-write at its fixed address.

        Args:
            path: absolute path of the new region; its parent directory must exist.
            size: bytes, a positive multiple of info().alignment.
            mode: permission bits, checked against later openers' uid/gid/groups.
            start: a fixed start address (aligned); None lets the broker place it in its arena.
            page_size: "4k", "thp", "hugetlb-2m" or "hugetlb-1g"; None for the namespace's default.

        Returns:
            The mapped Region. Close it (or use ``with``); unlink() removes the name.

        Raises:
            FileExistsError, FileNotFoundError, PermissionError, NotADirectoryError;
            OSError(EINVAL) for a misaligned size or start, OSError(EADDRINUSE) for
            a start overlapping another region, OSError(ENOMEM) when nothing fits.
        """
        mode, start, policy = _check_region(path, size, mode, start, page_size)
        request = session_pb2.SessionRequest()
        request.create.CopyFrom(
            session_pb2.CreateAndAttachRequest(path=path, size_bytes=size, mode=mode, start=start, page_policy=policy)
        )
        session = self._live_session()
        return self._adopt(session, session.send(request), path, False)

    def allocate(
        self, path: str, size: int, *, mode: int = 0o600, start: int | None = None, page_size: str | None = None
    ) -> Stat:
        """Create a region without mapping it here (for tools such as `mshare create`).

        Takes the arguments of create() and raises the same errors; the region
        is not attached, so it stays until unlink() with nobody mapping it.
        """
        mode, start, policy = _check_region(path, size, mode, start, page_size)
        request = pb.CreateRegionRequest(path=path, size_bytes=size, mode=mode, start=start, page_policy=policy)
        return stat_of(self._rpc(self._stub.CreateRegion, request, path).entry)

    def open(self, path: str, *, readonly: bool = False) -> Region:
        """Attach an existing region and map it at its fixed address.

        Opening a region this process already maps returns another handle on
        the same mapping; asking read-write while it is mapped read-only raises
        OSError(EBUSY).

        Raises:
            FileNotFoundError, PermissionError (needs r, plus w unless readonly, and x on
            every directory above), IsADirectoryError, OSError(EBUSY).
        """
        session = self._session
        if session is None or self._pid != region_module.pid:
            session = self._live_session()  # raises the reason
        request_id = session.send_attach(check_path(path), _READ_ONLY if readonly else _READ_WRITE)
        return self._adopt(session, request_id, path, bool(readonly))

    def unlink(self, path: str) -> None:
        """Remove the name now; the region is freed when its last attachment ends."""
        self._rpc(self._stub.UnlinkRegion, pb.UnlinkRegionRequest(path=check_path(path)), path)

    # -- the tree -----------------------------------------------------------------

    def stat(self, path: str) -> Stat:
        reply = self._rpc(self._stub.GetEntry, pb.GetEntryRequest(path=check_path(path)), path)
        return stat_of(reply.entry)

    def scandir(self, path: str = "/") -> Iterator[Stat]:
        """The entries of a directory, sorted by name, fetched page by page."""
        check_path(path)
        token = ""
        while True:
            request = pb.ListEntriesRequest(path=path, page_size=LIST_PAGE, page_token=token)
            reply = self._rpc(self._stub.ListEntries, request, path)
            yield from (stat_of(entry) for entry in reply.entries)
            token = reply.next_page_token
            if not token:
                return

    def listdir(self, path: str = "/") -> list[str]:
        """Sorted names in a directory (needs r on it)."""
        return [entry.name for entry in self.scandir(path)]

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        request = pb.CreateDirectoryRequest(path=check_path(path), mode=_check_mode(mode))
        self._rpc(self._stub.CreateDirectory, request, path)

    def rmdir(self, path: str) -> None:
        self._rpc(self._stub.DeleteDirectory, pb.DeleteDirectoryRequest(path=check_path(path)), path)

    def rename(self, src: str, dst: str, *, dst_namespace: str | None = None) -> None:
        """rename(2): replaces a compatible dst (a region, or an empty directory for a directory).

        dst may name another namespace, as dst_namespace or as "NAMESPACE:/path";
        a rename across namespaces fails with OSError(EXDEV), as across file systems.
        """
        if isinstance(dst, str) and not dst.startswith("/") and ":/" in dst and dst_namespace is None:
            dst_namespace, dst = dst.split(":", 1)
        request = pb.RenameEntryRequest(
            source_path=check_path(src), destination_path=check_path(dst), destination_namespace=dst_namespace or ""
        )
        self._rpc(self._stub.RenameEntry, request, src)

    def chmod(self, path: str, mode: int) -> None:
        self._rpc(self._stub.SetMode, pb.SetModeRequest(path=check_path(path), mode=_check_mode(mode)), path)

    def chown(self, path: str, uid: int, gid: int) -> None:
        """Root only; -1 keeps the current value."""
        request = pb.SetOwnerRequest(path=check_path(path), uid=_check_int(uid, "uid"), gid=_check_int(gid, "gid"))
        self._rpc(self._stub.SetOwner, request, path)

    def info(self) -> Info:
        reply = self._rpc(self._stub.GetInfo, pb.GetInfoRequest())
        ns = reply.namespace
        return Info(
            alignment=ns.alignment_bytes,
            arena_start=ns.arena_start,
            arena_size=ns.arena_size_bytes,
            page_sizes=tuple(POLICY_NAMES[p] for p in ns.page_policies if p in POLICY_NAMES),
            namespace=ns.name,
            default_page_size=POLICY_NAMES.get(ns.default_page_policy, "4k"),
            broker_version=reply.broker_version,
            epoch=reply.epoch,
            region_capacity=reply.region_capacity,
            huge_pages=tuple(
                HugePages(POLICY_NAMES.get(p.page_policy, "?"), p.page_size_bytes, p.total_pages, p.free_pages, p.reserved_pages)
                for p in reply.huge_page_pools
            ),
            thp=reply.thp_shmem_enabled,
        )

    def watch(self, path: str, recursive: bool = False) -> Watch:
        """Events under path, in order: "existing" for each entry there now, "synced", then live ones.

        Returns a Watch: iterate it for Events; close() it (or use ``with``)
        to stop. The iteration ends when this session or the broker ends; a
        watcher that falls far behind gets OSError(ENOBUFS) and must watch again.
        """
        request = pb.WatchRequest(path=check_path(path), recursive=bool(recursive))
        watch = Watch(self, self._rpc(self._stub.Watch, request, path), path)
        self._watches.add(watch)
        return watch

    def namespaces(self) -> list[str]:
        reply = self._rpc(self._stub.ListNamespaces, pb.ListNamespacesRequest())
        return [ns.name for ns in reply.namespaces]

    def sessions(self) -> list[SessionInfo]:
        reply = self._rpc(self._stub.ListSessions, pb.ListSessionsRequest())
        return [
            SessionInfo(
                id=s.id,
                uid=s.identity.uid,
                gid=s.identity.gid,
                groups=tuple(s.identity.groups),
                pid=s.identity.pid,
                namespace=s.namespace,
                client_version=s.client_version,
                attachment_count=s.attachment_count,
                attachments=tuple(
                    Attachment(a.id, a.region_id, a.namespace, a.path, ACCESS_NAMES.get(a.access, "?")) for a in s.attachments
                ),
            )
            for s in reply.sessions
        ]

    # -- life ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._session is None

    def close(self) -> None:
        """Close every region of this namespace, then the session; idempotent.

        Raises:
            BufferError: some region still has live views; those regions and
                the session stay open, the others are closed.
        """
        if self._session is None:
            return
        if self._pid != region_module.pid:
            self._session = None  # a forked child's copy: the parent owns the session
            return
        regions = [ref() for ref in list(self._regions.values())]
        busy = []
        for region in filter(None, regions):
            try:
                region.close()
            except BufferError:
                busy.append(region.path)
        if busy:
            raise BufferError(f"cannot close namespace: views of {', '.join(busy)} are still alive")
        for watch in list(self._watches):
            watch.close()  # their iterations end
        session, self._session = self._session, None
        session.close()
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"session {self.session_id}"
        return f"<mshare.Namespace {getattr(self, 'name', '?')} at {self.run_dir} {state}>"


class Watch:
    """A running watch: an iterator of Events, closed with close() or a with block."""

    def __init__(self, namespace: Namespace, call: Any, path: str) -> None:
        self._namespace = namespace
        self._call = call
        self.path = path
        self._closed = False

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Event:
        try:
            return event_of(next(self._call))
        except grpc.RpcError as exc:
            if self._closed and exc.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise self._namespace._translate(exc, self.path) from None

    def close(self) -> None:
        """Stop the stream; idempotent. Iteration then ends."""
        self._closed = True
        self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(namespace: str = "default", *, run_dir: str | os.PathLike[str] | None = None) -> Namespace:
    """Open a session with the broker in one namespace.

    Args:
        namespace: a namespace the broker's config defines ("default" always exists).
        run_dir: the broker's run directory; default $MSHARE_RUN_DIR, else the first of
            /run/mshare, $XDG_RUNTIME_DIR/mshare, /tmp/mshare-$UID holding session.sock.

    The first connect() of a process reserves the broker's address arena in it.

    Raises:
        BrokerUnavailableError: no broker answers at the socket it names.
        FileNotFoundError: no such namespace.
    """
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be str, not {type(namespace).__name__}")
    if not namespace:
        raise ValueError("namespace must not be empty")
    return Namespace(namespace, find_run_dir(run_dir))
