"""The client end of the session channel: hello, request ids shared by threads, fd receipt."""

from __future__ import annotations

import array
import errno
import os
import socket
import sys
import threading
import time
import weakref
from typing import Final

from google.protobuf.message import DecodeError

from .errors import ProtocolError, SessionLostError, os_error
from .v1 import resources_pb2, session_pb2

PROTOCOL_VERSION: Final = 1
#: Replies are small (a descriptor or an error); anything larger is a protocol error.
MAX_REPLY: Final = 64 * 1024
#: The broker sends at most one fd per reply; room for more so extra ones can be closed.
_ANCILLARY: Final = socket.CMSG_SPACE(4 * 4)
# Plain ints: combining the socket module's enum flags costs microseconds per call.
_RECV_FLAGS: Final = int(socket.MSG_CMSG_CLOEXEC)
_SPIN_FLAGS: Final = int(socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT)
#: Low-latency mode for this process: microseconds to poll for a reply before sleeping (0: off).
SPIN_US: Final = "MSHARE_CLIENT_SPIN_US"
_TRUNCATED: Final = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)
_SOL_SOCKET: Final = int(socket.SOL_SOCKET)
_SCM_RIGHTS: Final = int(socket.SCM_RIGHTS)
_ONE_FD: Final = (_SOL_SOCKET, _SCM_RIGHTS)


def received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class Session:
    """One SOCK_SEQPACKET connection to the broker, and its detach channel.

    Threads may share it: each request gets an id; whichever waiting thread is
    reading hands other threads' replies to them. Every reply's fds are owned
    by exactly one party: the caller that asked, or this class, which closes
    fds nobody waits for. Detaches go on the detach channel the broker hands
    over at hello, so an attach sent after one is not queued behind it.
    """

    _sock: socket.socket | None = None
    _channel: socket.socket | None = None

    def __init__(self, path: str, spin_us: int = 0) -> None:
        self.path = path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._next_id = 1
        self.last_sent = 0
        # Guards id assignment and sends, so ids reach the broker in increasing order.
        self._send_lock = threading.Lock()
        # Held by the one thread reading the socket; the others sleep on _cond.
        self._reader = threading.Lock()
        # Wakes threads waiting for a reply another thread read; taken only when some sleep.
        self._cond = threading.Condition(threading.Lock())
        self._sleepers = 0
        self._replies: dict[int, tuple[session_pb2.SessionResponse, list[int]]] = {}
        self._waiting: set[int] = set()
        self._lost: BaseException | None = None
        self.spin_ns = spin_us * 1000
        # Messages for the hot paths, filled and sent under _send_lock: building one costs microseconds.
        self._attach_message = session_pb2.SessionRequest()
        self._attach_body = self._attach_message.attach
        self._attach_body.access = self._attach_access = resources_pb2.ACCESS_READ_WRITE
        self._attach_path = ""
        self._detach_message = session_pb2.SessionRequest()
        self._detach_message.detach.SetInParent()
        self._detach_ids = self._detach_message.detach.attachment_ids
        _SESSIONS.add(self)

    def hello(self, namespace: str, client_version: str) -> session_pb2.HelloResponse:
        request = session_pb2.SessionRequest()
        request.hello.min_protocol_version = PROTOCOL_VERSION
        request.hello.max_protocol_version = PROTOCOL_VERSION
        request.hello.namespace = namespace
        request.hello.client_version = client_version
        request.hello.detach_channel = True
        reply, fds = self.call(request)
        if reply.hello.detach_channel and len(fds) == 1:
            try:
                self._channel = socket.socket(fileno=fds[0])
            except OSError:
                close_all(fds)  # not a socket: detaches go on the session socket
        else:
            close_all(fds)
        return reply.hello

    def call(self, request: session_pb2.SessionRequest) -> tuple[session_pb2.SessionResponse, list[int]]:
        """Send a request and wait for its reply: reply(send(request))."""
        return self.reply(self.send(request))

    def send(self, request: session_pb2.SessionRequest) -> int:
        """Send a request; returns its id, for exactly one reply() or abandon()."""
        with self._send_lock:
            return self._send_locked(request)

    def send_attach(self, path: str, access: resources_pb2.Access) -> int:
        """send() an attach request by path (the hot path: the message is reused)."""
        lock = self._send_lock
        lock.acquire()
        try:
            if path is not self._attach_path or access != self._attach_access:  # a repeated open sets nothing
                body = self._attach_body
                body.path = self._attach_path = path
                body.access = self._attach_access = access
            return self._send_locked(self._attach_message)
        finally:
            lock.release()

    def detach(self, attachment_id: int) -> None:
        """Send a detach, which gets no reply; every later call of this session observes it.

        A session that has ended has no attachments left: then nothing is sent.
        It goes on the detach channel if there is one (read once: close() may
        drop it meanwhile). The close hot path: one function, no helpers.
        """
        lock, ids = self._send_lock, self._detach_ids
        lock.acquire()
        try:
            sock = self._sock
            if sock is None or self._lost is not None:
                return
            request_id = self._next_id
            self._next_id = request_id + 1
            message = self._detach_message
            message.request_id = request_id
            ids.append(attachment_id)
            data = message.SerializeToString()
            channel = self._channel
            try:
                if channel is None:
                    sock.send(data)
                else:
                    try:
                        channel.send(data)
                    except OSError:
                        self._drop_channel()  # the broker let it go: the session socket carries the detach
                        sock.send(data)
            except OSError as exc:
                self._lose(exc)  # the send ended the session, and its attachments with it
                return
            self.last_sent = request_id
        finally:
            del ids[:]  # after the send: the broker's wake-up starts sooner
            lock.release()

    def _send_locked(self, request: session_pb2.SessionRequest) -> int:
        """Number and send a request whose reply reply() will wait for.

        The caller holds _send_lock, so ids reach the broker in order.
        """
        sock = self._sock
        if sock is None or self._lost is not None:
            raise self._ended()
        request_id = self._next_id
        self._next_id = request_id + 1
        request.request_id = request_id
        self._waiting.add(request_id)
        try:
            sock.send(request.SerializeToString())
        except OSError as exc:
            raise self._lose(exc) from exc
        self.last_sent = request_id
        return request_id

    def _drop_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def abandon(self, request_id: int) -> None:
        """Stop waiting for a sent request's reply: its fds are closed, now or when it comes."""
        self._waiting.discard(request_id)
        found = self._replies.pop(request_id, None)
        if found is not None:
            close_all(found[1])

    def reply(self, request_id: int) -> tuple[session_pb2.SessionResponse, list[int]]:
        """A sent request's reply, and the fds that came with it (the caller owns them).

        Read it ourselves, or take it from the thread that read it; raises the
        reply's error as an OSError. A single thread never touches _cond: it
        takes the reader lock, reads its reply and leaves. Dict and set
        operations are atomic under the GIL; a sleeper counts itself before it
        checks, so no hand-over is missed.
        """
        try:
            while True:
                found = self._replies.pop(request_id, None) if self._replies else None
                if found is not None:
                    reply, fds = found
                    break
                if self._reader.acquire(False):  # positional: keywords cost a parse per call
                    try:
                        found = self._replies.pop(request_id, None) if self._replies else None
                        if found is not None:
                            reply, fds = found
                            break
                        reply, fds = self._recv()
                        while reply.request_id != request_id:
                            self._hand_over(reply, fds)
                            reply, fds = self._recv()
                        break
                    finally:
                        self._reader.release()
                        if self._sleepers:
                            with self._cond:
                                self._cond.notify_all()
                with self._cond:
                    self._sleepers += 1
                    try:
                        self._cond.wait_for(
                            lambda: request_id in self._replies or not self._reader.locked() or self._lost is not None
                        )
                    finally:
                        self._sleepers -= 1
                if self._lost is not None and request_id not in self._replies:
                    raise SessionLostError(errno.ECONNRESET, f"the session with the broker at {self.path} ended", self.path)
        except BaseException:
            self.abandon(request_id)  # interrupted: a reply another thread keeps for us now or later is closed
            raise
        self._waiting.discard(request_id)
        if reply.HasField("error"):
            close_all(fds)
            error = reply.error
            raise os_error(error.reason, error.message, error.path)
        return reply, fds

    def _hand_over(self, reply: session_pb2.SessionResponse, fds: list[int]) -> None:
        """A reply for another thread: keep it for that thread, or close its fds if nobody waits."""
        request_id = reply.request_id
        if request_id in self._waiting:
            self._replies[request_id] = (reply, fds)
            if request_id not in self._waiting:  # abandoned meanwhile: one of us takes it back
                self.abandon(request_id)
            elif self._sleepers:
                with self._cond:
                    self._cond.notify_all()
            return
        close_all(fds)
        if reply.request_id == 0 and reply.HasField("error"):
            raise ProtocolError(errno.EPROTO, f"the broker rejected a request: {reply.error.message}")

    def _recv(self) -> tuple[session_pb2.SessionResponse, list[int]]:
        sock = self._sock
        if sock is None or self._lost is not None:
            raise self._ended()
        try:
            data, ancillary, flags, _ = self._spin(sock) if self.spin_ns else sock.recvmsg(MAX_REPLY, _ANCILLARY, _RECV_FLAGS)
        except OSError as exc:
            raise self._lose(exc) from exc
        if not ancillary:
            fds = []
        elif len(ancillary) == 1 and len(ancillary[0][2]) == 4 and ancillary[0][:2] == _ONE_FD:
            fds = [int.from_bytes(ancillary[0][2], sys.byteorder, signed=True)]  # the usual single memfd
        else:
            fds = received_fds(ancillary)
        if not data and not fds:
            raise self._lose(None)
        if flags & _TRUNCATED:
            close_all(fds)
            raise ProtocolError(errno.EPROTO, "a reply from the broker was truncated")
        try:
            return session_pb2.SessionResponse.FromString(data), fds
        except DecodeError:
            close_all(fds)
            raise ProtocolError(errno.EPROTO, "the broker sent a reply this client cannot decode") from None

    def _spin(self, sock: socket.socket) -> tuple[bytes, list[tuple[int, int, bytes]], int, object]:
        """Low-latency mode: poll without sleeping for spin_ns before blocking (a wake-up costs tens of us)."""
        deadline = time.perf_counter_ns() + self.spin_ns
        while time.perf_counter_ns() < deadline:
            try:
                return sock.recvmsg(MAX_REPLY, _ANCILLARY, _SPIN_FLAGS)
            except BlockingIOError:
                pass
        return sock.recvmsg(MAX_REPLY, _ANCILLARY, _RECV_FLAGS)

    def _ended(self) -> SessionLostError:
        return SessionLostError(errno.ECONNRESET, f"the session with the broker at {self.path} has ended", self.path)

    def _lose(self, exc: BaseException | None) -> SessionLostError:
        with self._cond:
            self._lost = exc or EOFError()
            self._cond.notify_all()
        return SessionLostError(errno.ECONNRESET, f"the session with the broker at {self.path} ended", self.path)

    def close(self) -> None:
        """Idempotent; the broker ends every attachment of this session when it sees the EOF."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._drop_channel()
        with self._cond:
            stale = list(self._replies.values())
            self._replies.clear()
        for _, fds in stale:
            close_all(fds)


#: Every open session of this process, so a forked child can let go of its copies.
_SESSIONS: weakref.WeakSet[Session] = weakref.WeakSet()


def _drop_sessions_in_child() -> None:
    """A forked child closes its copies of the parent's session sockets, so the broker
    sees a session end when the parent ends it, whatever the child does."""
    for session in list(_SESSIONS):
        session._cond = threading.Condition(threading.Lock())
        session._reader = threading.Lock()
        session._sleepers = 0
        session.close()


os.register_at_fork(after_in_child=_drop_sessions_in_child)
