"""The session socket: one epoll loop, SO_PEERCRED identities, memfd handoff, EOF detaches all."""

from __future__ import annotations

import array
import collections
import errno
import logging
import os
import select
import socket
import stat
import struct
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from google.protobuf.message import DecodeError

from mshare import __version__
from mshare.errors import CODE_NUMBERS, ERRNO_CODES, code_name
from mshare.v1 import resources_pb2, session_pb2

from . import convert
from .broker import Broker
from .errors import BrokerError
from .records import Handoff, SessionRecord
from .repeats import AttachTarget, RepeatedAttach
from .tree import Credentials

log = logging.getLogger(__name__)

#: The one protocol version this broker speaks (docs/protocol.md).
PROTOCOL_VERSION: Final = 1

#: SO_PEERGROUPS from <asm/socket.h>; Python's socket module lacks it.
SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)
_UCRED: Final = struct.Struct("3i")
#: Room for NGROUPS_MAX (65536) gids, asked for only when the first try is too small.
_GROUPS_SMALL, _GROUPS_MAX = 256 * 4, 65536 * 4

#: Largest request accepted; real ones are under 5 KiB (a 4096-byte path and a few numbers).
MAX_PACKET: Final = 64 * 1024
#: Clients may not send fds; room for a few so they can be received and closed.
_ANCILLARY: Final = socket.CMSG_SPACE(16 * 4)
#: Requests taken from one connection per wakeup, so one busy client cannot starve the rest.
BATCH: Final = 64
#: Events taken per epoll_wait; without a limit Python allocates room for 1023 on every call.
EVENTS: Final = 64
#: How long accepting pauses when the broker is out of descriptors.
ACCEPT_PAUSE: Final = 0.1

# Plain ints: the socket and select constants are enum flags, and combining those costs
# microseconds per request on the hot path.
_SEND_FLAGS: Final = int(socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
_RECV_FLAGS: Final = int(socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT)
_TRUNCATED: Final = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)
_SOL_SOCKET: Final = int(socket.SOL_SOCKET)
_SCM_RIGHTS: Final = int(socket.SCM_RIGHTS)
_READABLE: Final = int(select.EPOLLIN | select.EPOLLRDHUP)
_WRITABLE: Final = int(select.EPOLLOUT | select.EPOLLRDHUP)
_INPUT_EVENTS: Final = int(select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR)
_OUTPUT_EVENT: Final = int(select.EPOLLOUT)

#: What a session request can be, as metrics label it.
REQUEST_KINDS: Final = ("hello", "create", "attach", "detach", "invalid")
#: Latency buckets of session requests in seconds: the hot paths take tens of microseconds.
REQUEST_BUCKETS: Final = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3, 0.1, 1.0)

#: What a detach can cure, by freeing a region's range and descriptors: an attach or
#: create that fails so is tried again after the detaches waiting on the detach channel.
CURABLE: Final = frozenset({errno.ENOMEM, errno.EADDRINUSE, errno.EMFILE, errno.ENFILE})

#: Threads that create hugetlb regions (whose fallocate can take seconds) off the session loop.
CREATE_WORKERS: Final = 2

#: Huge-page creates queued or running at once; more are refused with EBUSY, not queued without bound.
MAX_PENDING_CREATES: Final = 16

#: What a request's server takes besides the connection and the request id: the request, or an attach's target.
Body = TypeVar("Body")

#: One queued reply: the bytes, the SCM_RIGHTS ancillary data, whether it hands off a memfd,
#: and a socket the reply passes on, which the broker closes once the reply is sent or dropped.
Reply = tuple[bytes, list[tuple[int, int, bytes]], bool, socket.socket | None]


class RequestStats:
    """Session requests by kind and status code, with a latency histogram per kind (read by metrics)."""

    def __init__(self) -> None:
        codes = ("OK", "INTERNAL", *sorted(set(ERRNO_CODES.values())))
        self.counts = {(kind, code): 0 for kind in REQUEST_KINDS for code in codes}
        self.buckets = {kind: [0] * (len(REQUEST_BUCKETS) + 1) for kind in REQUEST_KINDS}
        self.sums = dict.fromkeys(REQUEST_KINDS, 0.0)
        self.handoffs = {"ok": 0, "failed": 0}
        # The session loop and the create workers both record.
        self._lock = threading.Lock()

    def record(self, kind: str, code: str, seconds: float) -> None:
        lock = self._lock
        lock.acquire()  # not `with`: every request records, and `with` costs two bound methods
        try:
            self.counts[(kind, code)] = self.counts.get((kind, code), 0) + 1
            self.buckets[kind][bisect_left(REQUEST_BUCKETS, seconds)] += 1
            self.sums[kind] += seconds
        finally:
            lock.release()

    def handoff(self, ok: bool) -> None:
        lock = self._lock
        lock.acquire()
        try:
            self.handoffs["ok" if ok else "failed"] += 1
        finally:
            lock.release()


def _raise(exc: BaseException) -> None:
    raise exc


def peer_credentials(sock: socket.socket) -> Credentials:
    """The kernel's view of who connected: SO_PEERCRED uid, gid, pid and SO_PEERGROUPS."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _GROUPS_SMALL)
    except OSError as exc:
        if exc.errno != errno.ERANGE:
            raise
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _GROUPS_MAX)
    groups = array.array("I")
    groups.frombytes(raw[: len(raw) - len(raw) % groups.itemsize])
    return Credentials(uid, gid, frozenset(groups), pid)


def close_fds(ancillary: list[tuple[int, int, bytes]]) -> int:
    """Close every fd received in ancillary data; returns how many."""
    count = 0
    for level, kind, data in ancillary:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            for fd in fds:
                os.close(fd)
                count += 1
    return count


def remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a dead broker; the caller holds the run-dir lock. Never a non-socket."""
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass


_PARSE: Final = session_pb2.SessionRequest.FromString


class AttachReply:
    """The session loop's one attach reply, refilled for every attach.

    Building a reply costs microseconds on the hot path, and most attaches
    repeat the last one's region: then only the ids change.
    """

    __slots__ = ("_descriptor", "_last", "message")

    def __init__(self) -> None:
        self.message = session_pb2.SessionResponse()
        self._descriptor = self.message.attach.descriptor
        self._last: Handoff | None = None

    def fill(self, request_id: int, handoff: Handoff) -> session_pb2.SessionResponse:
        self.message.request_id = request_id
        last, self._last = self._last, handoff
        if last is not None and last[1:] == handoff[1:]:  # everything but the attachment id
            self._descriptor.attachment_id = handoff.attachment_id
        else:
            convert.fill_descriptor(self._descriptor, handoff)
        return self.message


class Connection:
    """One client connection; replies are sent without blocking, queued when the client lags."""

    __slots__ = ("channel", "closed", "creds", "fd", "lock", "outbox", "repeat", "seen", "session", "sock")

    def __init__(self, sock: socket.socket, creds: Credentials) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.creds = creds
        self.session: SessionRecord | None = None
        self.outbox: collections.deque[Reply] = collections.deque()
        # The broker's end of the session's detach channel, if the client asked for one.
        self.channel: socket.socket | None = None
        # The highest request id read on either socket.
        self.seen = 0
        self.repeat = RepeatedAttach()
        # Orders sends against teardown, so a queued fd is never sent after its region is freed.
        self.lock = threading.Lock()
        self.closed = False


class SessionServer:
    """Accepts sessions on <run_dir>/session.sock and serves them from one thread.

    The loop never blocks: sockets are non-blocking, a reply that does not fit
    is queued and the connection is not read again until it drains. Broker
    calls take the state lock only for in-memory work.
    """

    def __init__(self, broker: Broker, path: Path, spin_us: int = 0) -> None:
        self.broker = broker
        self.path = path
        self.spin_ns = spin_us * 1000
        self._epoll = select.epoll()
        self._listener: socket.socket | None = None
        # Both sockets of a connection, the session socket and its detach channel, by fd.
        self._conns: dict[int, Connection] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._stopping = False
        self._accept_paused_until = 0.0
        self._thread: threading.Thread | None = None
        self._workers = ThreadPoolExecutor(CREATE_WORKERS, thread_name_prefix="mshare-create")
        # Guards _pending_creates, counted by the loop and the workers.
        self._pending_lock = threading.Lock()
        self._pending_creates = 0
        self.stats = RequestStats()
        self._attach_reply = AttachReply()  # used by the loop thread only

    # -- life -----------------------------------------------------------------------

    def bind(self, mode: int, gid: int | None) -> None:
        """Bind and listen; created under a tight umask, then given the configured mode and group."""
        remove_stale_socket(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        if gid is not None:
            os.chown(self.path, -1, gid)
        os.chmod(self.path, mode)
        sock.listen(socket.SOMAXCONN)
        self._listener = sock
        self._epoll.register(sock.fileno(), select.EPOLLIN)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mshare-sessions", daemon=True)
        self._thread.start()

    def stop_accepting(self) -> None:
        """Close the listening socket and remove its path; live sessions go on."""
        listener, self._listener = self._listener, None
        if listener is not None:
            self._wake()
            listener.close()
        remove_stale_socket(self.path)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and close every connection (their sessions end)."""
        self.stop_accepting()
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self._workers.shutdown(wait=True, cancel_futures=True)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._epoll.close()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    # -- the loop -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                timeout = -1.0
                if self._accept_paused_until:
                    timeout = max(0.0, self._accept_paused_until - time.monotonic())
                for fd, mask in self._poll(timeout):
                    try:
                        self._dispatch(fd, mask)
                    except Exception:
                        # A bug must cost at most the connection it happened on, never the loop.
                        log.exception("internal error on session socket fd %d; dropping that connection", fd)
                        conn = self._conns.get(fd)
                        if conn is not None:
                            self._close(conn)
                if self._accept_paused_until and time.monotonic() >= self._accept_paused_until:
                    self._resume_accepting()
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)

    def _poll(self, timeout: float) -> list[tuple[int, int]]:
        """epoll_wait; in low-latency mode, first poll without sleeping for spin_us.

        A sleeping thread takes tens of microseconds to wake on another CPU,
        as long as the whole request; spinning trades CPU for that.
        """
        if self.spin_ns:
            deadline = time.perf_counter_ns() + self.spin_ns
            while time.perf_counter_ns() < deadline:
                events = self._epoll.poll(0, EVENTS)
                if events:
                    return events
        return self._epoll.poll(timeout, EVENTS)

    def _dispatch(self, fd: int, mask: int) -> None:
        conn = self._conns.get(fd)
        if conn is not None:
            if mask & _OUTPUT_EVENT:
                self._flush(conn)
            if mask & _INPUT_EVENTS and not conn.closed:
                self._read(conn)
        elif fd == self._wake_r:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        else:
            listener = self._listener  # stop_accepting() may clear it from another thread
            if listener is not None and fd == listener.fileno():
                self._accept(listener)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept a session: %s; pausing accepts for %.1fs", os.strerror(exc.errno), ACCEPT_PAUSE)
                    self._epoll.unregister(listener.fileno())
                    self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EINTR):
                    continue
                raise
            sock.setblocking(False)
            try:
                creds = peer_credentials(sock)
            except OSError as exc:
                log.warning("dropping a connection whose credentials cannot be read: %s", exc)
                sock.close()
                continue
            conn = Connection(sock, creds)
            self._conns[conn.fd] = conn
            self._epoll.register(conn.fd, _READABLE)

    def _resume_accepting(self) -> None:
        self._accept_paused_until = 0.0
        if self._listener is not None:
            self._epoll.register(self._listener.fileno(), select.EPOLLIN)

    def _read(self, conn: Connection) -> None:
        """Serve up to BATCH requests: the session socket's first, then the detach channel's.

        A client that closes one region and opens another sends the detach on
        its detach channel and then the attach on the session socket; the
        broker, woken by the detach, finds both and answers the attach first.
        An attach or a create depends on earlier detaches only through what
        they free, so one that fails with an error a detach can cure is tried
        again after them; every other request, and every request while events
        are watched (whose order it would change), is served after them. The
        session counts requests as seen (for gRPC calls that must observe
        them) only once both sockets are empty.
        """
        if conn.outbox:  # woken by the detach channel while a reply waits: no more requests until it is out
            if conn.channel is not None:
                self._drain(conn)
            return
        for _ in range(BATCH):
            try:
                data, ancillary, flags, _ = conn.sock.recvmsg(MAX_PACKET, _ANCILLARY, _RECV_FLAGS)
            except BlockingIOError:
                if conn.channel is not None and self._drain(conn):
                    continue  # requests sent after those detaches may have come meanwhile
                if conn.session is not None:
                    conn.session.mark_seen(conn.seen)  # both sockets are empty: all read is served
                return
            except OSError as exc:
                log.debug("session socket error: %s", exc)
                self._close(conn)
                return
            if ancillary and close_fds(ancillary):
                self._warn_fds(conn)
            if not data and not ancillary:
                self._close(conn)
                return
            if flags & _TRUNCATED:
                self._refuse(conn, BrokerError(errno.EINVAL, f"request larger than {MAX_PACKET} bytes or carrying descriptors"))
            else:
                self._handle(conn, data)
            if conn.outbox or conn.closed:
                return

    def _drain(self, conn: Connection) -> bool:
        """Serve up to BATCH detaches waiting on the detach channel; True if it held any packet.

        The channel gets no replies: a packet that is not a detach closes it
        (the session goes on, and its detaches must then come on the session socket).
        """
        channel = conn.channel
        assert channel is not None
        for count in range(BATCH):
            try:
                data, ancillary, flags, _ = channel.recvmsg(MAX_PACKET, _ANCILLARY, _RECV_FLAGS)
            except BlockingIOError:
                return count > 0
            except OSError as exc:
                log.debug("detach channel error: %s", exc)
                data, ancillary = b"", []
            if ancillary and close_fds(ancillary):
                self._warn_fds(conn)
            if not data and not ancillary:
                self._close_channel(conn)  # the client let it go
                return count > 0
            try:
                request = None if flags & _TRUNCATED else _PARSE(data)
            except DecodeError:
                request = None
            if request is None or request.WhichOneof("body") != "detach":
                log.warning(
                    "closed the detach channel of session %s (uid %d pid %d): it carried something other than a detach",
                    conn.session.id if conn.session else "-",
                    conn.creds.uid,
                    conn.creds.pid,
                )
                self.stats.record("invalid", code_name(errno.EINVAL), 0.0)
                self._close_channel(conn)
                return True
            if request.request_id > conn.seen:
                conn.seen = request.request_id
            self._answer(conn, request.request_id, "detach", self._serve, request)
        return True

    def _warn_fds(self, conn: Connection) -> None:
        log.warning("closed descriptors a client (uid %d pid %d) sent to the broker", conn.creds.uid, conn.creds.pid)

    # -- requests -------------------------------------------------------------------

    def _handle(self, conn: Connection, data: bytes) -> None:
        """Serve one request from the session socket; see _read for what waits for the detach channel.

        The hot path first: the connection's last attach again with a new id
        (RepeatedAttach) is served without a parse, and with no step it does
        not need (its code runs cold, right after the loop wakes).
        """
        repeat = conn.repeat
        request_id = repeat.match(data)
        if request_id >= 0:
            if request_id > conn.seen:
                conn.seen = request_id
            if conn.channel is not None and self.broker.watch_count():
                self._drain(conn)  # events in the order of the calls
            self._answer(conn, request_id, "attach", self._attach, repeat.target)
            return
        try:
            request = _PARSE(data)
        except DecodeError:
            self._refuse(conn, BrokerError(errno.EINVAL, "malformed request: not a mshare.v1.SessionRequest"))
            return
        kind = request.WhichOneof("body") or "invalid"
        request_id = request.request_id
        if request_id > conn.seen:
            conn.seen = request_id
        session = conn.session
        if session is None or (kind != "attach" and kind != "create"):
            if conn.channel is not None:
                self._drain(conn)  # observes every detach sent before it
            self._answer(conn, request_id, kind, self._serve, request)
            return
        if conn.channel is not None and self.broker.watch_count():
            self._drain(conn)  # events in the order of the calls
        if kind == "attach":
            attach = request.attach
            target = AttachTarget(attach.namespace, attach.path, attach.region_id, attach.access)
            repeat.remember(data, request_id, target)
            self._answer(conn, request_id, kind, self._attach, target)
        elif self._is_slow(session, request.create):
            if conn.channel is not None:
                self._drain(conn)  # the create thread cannot try again after them
            self._create_later(conn, request_id, request.create)
        else:
            self._answer(conn, request_id, kind, self._create_here, request.create)

    def _answer(
        self, conn: Connection, request_id: int, kind: str, serve: Callable[[Connection, int, Body], None], body: Body
    ) -> None:
        """serve(conn, request_id, body); every failure becomes an error reply, and the outcome a statistic."""
        started = time.perf_counter()
        try:
            serve(conn, request_id, body)
        except BrokerError as exc:
            code = code_name(exc.errno)
            self._reply_error(conn, request_id, exc)
        except Exception:
            code = "INTERNAL"
            log.exception("internal error serving session request %s", kind)
            self._reply_error(conn, request_id, BrokerError.internal())
        else:
            code = "OK"
        self.stats.record(kind, code, time.perf_counter() - started)

    def _create_later(self, conn: Connection, request_id: int, create: session_pb2.CreateAndAttachRequest) -> None:
        """Hand a hugetlb create to a worker; past MAX_PENDING_CREATES, refuse it instead of queueing."""
        with self._pending_lock:
            full = self._pending_creates >= MAX_PENDING_CREATES
            if not full:
                self._pending_creates += 1
        if full:
            busy = BrokerError(errno.EBUSY, f"{MAX_PENDING_CREATES} huge-page creates are in progress; try again")
            self._answer(conn, request_id, "create", lambda *_: _raise(busy), create)
            return

        def run() -> None:
            try:
                self._answer(conn, request_id, "create", self._create, create)
            finally:
                with self._pending_lock:
                    self._pending_creates -= 1

        self._workers.submit(run)

    def _is_slow(self, session: SessionRecord, create: session_pb2.CreateAndAttachRequest) -> bool:
        """A hugetlb create fallocates the whole region (seconds for many GiB): it runs on a worker."""
        try:
            policy = convert.policy_from_proto(create.page_policy)
            if policy is None:
                policy = self.broker.namespace(create.namespace or session.namespace).default_policy
        except BrokerError:
            return False  # refused at once, inline
        return policy.huge_page_bytes > 0 and policy in self.broker.policies  # an unoffered one: EINVAL, inline

    def _serve(self, conn: Connection, request_id: int, request: session_pb2.SessionRequest) -> None:
        """Every request but an attach or create of a live session, which _handle serves itself."""
        session = conn.session
        kind = request.WhichOneof("body")
        if kind == "hello":
            self._hello(conn, request_id, request.hello)
            return
        if session is None:
            raise BrokerError(errno.ENOTCONN, "the first request of a session must be hello")
        if kind == "detach":
            self.broker.detach(session, request.detach.attachment_ids)
        else:
            raise BrokerError(errno.EINVAL, "empty or unknown request")

    def _attach(self, conn: Connection, request_id: int, target: AttachTarget) -> None:
        session = conn.session
        assert session is not None
        namespace, path, region_id, number = target
        # Looked up without a call on the hot path; access_from_proto explains a miss (it raises).
        access = convert.ACCESS_BY_NUMBER.get(number) or convert.access_from_proto(number)
        try:
            handoff = self.broker.attach(session, namespace, path, region_id, access)
        except BrokerError as exc:
            if not self._cured(conn, exc):
                raise
            handoff = self.broker.attach(session, namespace, path, region_id, access)
        self._send(conn, self._attach_reply.fill(request_id, handoff), handoff.fd)
        # DEBUG, and after the reply: on the hot path a log line costs more than the attach itself.
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "region attached: %s:%s size %d by session %d (%s)",
                handoff.namespace,
                handoff.path,
                handoff.size,
                session.id,
                handoff.access.value,
            )

    def _create_here(self, conn: Connection, request_id: int, create: session_pb2.CreateAndAttachRequest) -> None:
        """A create on the session loop, served before the detaches read with it and tried again after them."""
        try:
            self._create(conn, request_id, create)
        except BrokerError as exc:
            if not self._cured(conn, exc):
                raise
            self._create(conn, request_id, create)

    def _cured(self, conn: Connection, exc: BrokerError) -> bool:
        """Whether serving the waiting detaches may cure exc (they were served if so): then try once more."""
        return exc.errno in CURABLE and conn.channel is not None and self._drain(conn)

    def _create(self, conn: Connection, request_id: int, create: session_pb2.CreateAndAttachRequest) -> None:
        session = conn.session
        assert session is not None
        _, created = self.broker.create_region(session, *convert.create_args(create), attach=True)
        if created is not None:
            response = session_pb2.SessionResponse(request_id=request_id)  # its own: creates run on workers too
            convert.fill_descriptor(response.attach.descriptor, created)
            self._send(conn, response, created.fd)

    def _hello(self, conn: Connection, request_id: int, hello: session_pb2.HelloRequest) -> None:
        if conn.session is not None:
            raise BrokerError(errno.EINVAL, "this session already said hello")
        if not hello.min_protocol_version <= PROTOCOL_VERSION <= hello.max_protocol_version:
            raise BrokerError(
                errno.EINVAL,
                f"protocol versions {hello.min_protocol_version}..{hello.max_protocol_version} not spoken; "
                f"this broker speaks {PROTOCOL_VERSION}",
            )
        session = self.broker.open_session(conn.creds, hello.namespace or "default", hello.client_version)
        ns = self.broker.namespace(session.namespace)
        response = session_pb2.SessionResponse(request_id=request_id)
        response.hello.CopyFrom(
            session_pb2.HelloResponse(
                protocol_version=PROTOCOL_VERSION,
                broker_version=__version__,
                session_id=session.id,
                token=session.token,
                epoch=self.broker.epoch,
                identity=convert.identity(conn.creds),
                namespace=convert.namespace_info(ns, self.broker),
            )
        )
        with conn.lock:
            conn.session = session
        theirs = self._open_channel(conn) if hello.detach_channel else None
        response.hello.detach_channel = theirs is not None
        self._send(conn, response, -1, theirs)

    def _open_channel(self, conn: Connection) -> socket.socket | None:
        """A socket pair for the session's detaches: the broker keeps one end, the hello reply passes on the other.

        Without descriptors to spare the session goes on without one: detaches then come on the session socket.
        """
        try:
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        except OSError as exc:
            log.warning("session %s: no detach channel: %s", conn.session.id if conn.session else "-", exc.strerror)
            return None
        mine.setblocking(False)
        mine.shutdown(socket.SHUT_WR)  # the broker never writes to it
        conn.channel = mine
        self._conns[mine.fileno()] = conn
        self._epoll.register(mine.fileno(), _READABLE)
        return theirs

    def _refuse(self, conn: Connection, exc: BrokerError) -> None:
        """A packet that is no request at all: answered with request id 0, counted as invalid."""
        self.stats.record("invalid", code_name(exc.errno), 0.0)
        self._reply_error(conn, 0, exc)

    def _reply_error(self, conn: Connection, request_id: int, exc: BrokerError) -> None:
        response = session_pb2.SessionResponse(request_id=request_id)
        response.error.CopyFrom(
            resources_pb2.Error(code=CODE_NUMBERS[code_name(exc.errno)], reason=exc.reason, message=exc.message, path=exc.path)
        )
        self._send(conn, response, -1)

    # -- sending --------------------------------------------------------------------

    def _send(
        self, conn: Connection, response: session_pb2.SessionResponse, fd: int, passed: socket.socket | None = None
    ) -> None:
        """Send now, or queue behind earlier replies; a handoff counts when its send succeeds or fails.

        fd is a region's memfd, which the broker keeps; passed is a socket the
        reply hands over, which the broker closes once the reply is sent or dropped.
        """
        data = response.SerializeToString()
        if passed is not None:
            fd = passed.fileno()
        ancillary = [(_SOL_SOCKET, _SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))] if fd >= 0 else []
        handoff = fd >= 0 and passed is None
        conn.lock.acquire()  # not `with`: on the hot path it costs two bound methods per call
        try:
            if conn.closed:
                self._handed_off(conn, handoff, None, passed)
                return
            if not conn.outbox:
                try:
                    conn.sock.sendmsg([data], ancillary, _SEND_FLAGS)
                except BlockingIOError:
                    self._epoll.modify(conn.fd, _WRITABLE)
                except OSError as exc:
                    self._handed_off(conn, handoff, exc, passed)
                    return
                else:
                    self._handed_off(conn, handoff, None, passed)
                    return
            conn.outbox.append((data, ancillary, handoff, passed))
        finally:
            conn.lock.release()

    def _handed_off(self, conn: Connection, handoff: bool, error: OSError | None, passed: socket.socket | None) -> None:
        failed = error is not None or conn.closed
        if passed is not None:
            passed.close()
        if handoff:
            self.stats.handoff(not failed)
        if failed:
            reason = os.strerror(error.errno or 0) if error is not None else "the connection is closed"
            log.warning("session %s: reply not delivered: %s", conn.session.id if conn.session else "-", reason)

    def _flush(self, conn: Connection) -> None:
        with conn.lock:
            while conn.outbox:
                data, ancillary, handoff, passed = conn.outbox[0]
                try:
                    conn.sock.sendmsg([data], ancillary, _SEND_FLAGS)
                except BlockingIOError:
                    return
                except OSError as exc:
                    for _, _, queued, queued_passed in conn.outbox:
                        self._handed_off(conn, queued, exc, queued_passed)
                    conn.outbox.clear()
                    break
                conn.outbox.popleft()
                self._handed_off(conn, handoff, None, passed)
            if not conn.closed:
                self._epoll.modify(conn.fd, _READABLE)
        if not conn.closed:
            self._read(conn)

    def _close(self, conn: Connection) -> None:
        with conn.lock:
            if conn.closed:
                return
            conn.closed = True
            for _, _, handoff, passed in conn.outbox:
                self._handed_off(conn, handoff, None, passed)
            conn.outbox.clear()
        self._forget(conn.sock)
        if conn.channel is not None:
            self._close_channel(conn)
        if conn.session is not None:
            self.broker.end_session(conn.session)

    def _close_channel(self, conn: Connection) -> None:
        channel, conn.channel = conn.channel, None
        assert channel is not None
        self._forget(channel)

    def _forget(self, sock: socket.socket) -> None:
        """Take one of a connection's sockets out of the loop, and close it."""
        self._conns.pop(sock.fileno(), None)
        try:
            self._epoll.unregister(sock.fileno())
        except (OSError, ValueError):
            pass
        sock.close()
