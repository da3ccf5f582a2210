"""The client end of the session channel: hello, request ids shared by threads, fd receipt."""

from __future__ import annotations

import array
import errno
import os
import socket
import threading
import weakref
from typing import Final

from google.protobuf.message import DecodeError

from .errors import ProtocolError, SessionLostError, os_error
from .v1 import session_pb2

PROTOCOL_VERSION: Final = 1
#: Replies are small (a descriptor or an error); anything larger is a protocol error.
MAX_REPLY: Final = 64 * 1024
#: The broker sends at most one fd per reply; room for more so extra ones can be closed.
_ANCILLARY: Final = socket.CMSG_SPACE(4 * 4)


def received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class Session:
    """One SOCK_SEQPACKET connection to the broker.

    Threads may share it: each request gets an id; whichever waiting thread is
    reading hands other threads' replies to them. Every reply's fds are owned
    by exactly one party: the caller that asked, or this class, which closes
    fds nobody waits for.
    """

    _sock: socket.socket | None = None

    def __init__(self, path: str) -> None:
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
        # Guards _replies, _reading and _waiting; never held while blocked in recv.
        self._cond = threading.Condition(threading.Lock())
        self._replies: dict[int, tuple[session_pb2.SessionResponse, list[int]]] = {}
        self._waiting: set[int] = set()
        self._reading = False
        self._lost: BaseException | None = None
        _SESSIONS.add(self)

    def hello(self, namespace: str, client_version: str) -> session_pb2.HelloResponse:
        request = session_pb2.SessionRequest()
        request.hello.min_protocol_version = PROTOCOL_VERSION
        request.hello.max_protocol_version = PROTOCOL_VERSION
        request.hello.namespace = namespace
        request.hello.client_version = client_version
        reply, fds = self.call(request)
        close_all(fds)
        return reply.hello

    def call(self, request: session_pb2.SessionRequest) -> tuple[session_pb2.SessionResponse, list[int]]:
        """Send a request and wait for its reply; raises the reply's error as an OSError.

        Returns the reply and the fds that came with it (the caller owns them).
        """
        request_id = self._send(request, wait=True)
        try:
            reply, fds = self._wait(request_id)
        finally:
            with self._cond:
                self._waiting.discard(request_id)
        if reply.HasField("error"):
            close_all(fds)
            error = reply.error
            raise os_error(error.reason, error.message, error.path)
        return reply, fds

    def send_oneway(self, request: session_pb2.SessionRequest) -> None:
        """Send a request that gets no reply (detach); a later call of this session observes it."""
        self._send(request, wait=False)

    def _send(self, request: session_pb2.SessionRequest, *, wait: bool) -> int:
        with self._send_lock:
            sock = self._live()
            request_id = self._next_id
            self._next_id += 1
            request.request_id = request_id
            if wait:
                with self._cond:
                    self._waiting.add(request_id)
            try:
                sock.sendmsg([request.SerializeToString()])
            except OSError as exc:
                raise self._lose(exc) from exc
            self.last_sent = request_id
            return request_id

    def _wait(self, request_id: int) -> tuple[session_pb2.SessionResponse, list[int]]:
        with self._cond:
            while True:
                if request_id in self._replies:
                    return self._replies.pop(request_id)
                if self._lost is not None:
                    raise SessionLostError(errno.ECONNRESET, f"the session with the broker at {self.path} ended", self.path)
                if not self._reading:
                    self._reading = True
                    break
                self._cond.wait()
        try:
            while True:
                reply, fds = self._recv()
                with self._cond:
                    if reply.request_id == request_id:
                        return reply, fds
                    if reply.request_id in self._waiting:
                        self._replies[reply.request_id] = (reply, fds)
                        self._cond.notify_all()
                        continue
                close_all(fds)
                if reply.request_id == 0 and reply.HasField("error"):
                    raise ProtocolError(errno.EPROTO, f"the broker rejected a request: {reply.error.message}")
        finally:
            with self._cond:
                self._reading = False
                self._cond.notify_all()

    def _recv(self) -> tuple[session_pb2.SessionResponse, list[int]]:
        sock = self._live()
        try:
            data, ancillary, flags, _ = sock.recvmsg(MAX_REPLY, _ANCILLARY, socket.MSG_CMSG_CLOEXEC)
        except OSError as exc:
            raise self._lose(exc) from exc
        fds = received_fds(ancillary)
        if not data and not fds:
            raise self._lose(None)
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            close_all(fds)
            raise ProtocolError(errno.EPROTO, "a reply from the broker was truncated")
        try:
            return session_pb2.SessionResponse.FromString(data), fds
        except DecodeError:
            close_all(fds)
            raise ProtocolError(errno.EPROTO, "the broker sent a reply this client cannot decode") from None

    def _live(self) -> socket.socket:
        sock = self._sock
        if sock is None or self._lost is not None:
            raise SessionLostError(errno.ECONNRESET, f"the session with the broker at {self.path} has ended", self.path)
        return sock

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
        session.close()


os.register_at_fork(after_in_child=_drop_sessions_in_child)
