"""Unit tests of the session loop's sends: a reply that passes on a socket owns it until it is sent or dropped."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mshare.v1 import session_pb2
from mshared.broker import Broker, NamespaceSpec
from mshared.regions import AddressSpace, GiB, MiB, PagePolicy
from mshared.sessions import Connection, SessionServer
from mshared.tree import Credentials

from .backing import Backings


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SessionServer]:
    broker = Broker([NamespaceSpec("default", 2 * MiB, PagePolicy.SMALL)], AddressSpace(64 * GiB, GiB, MiB, 1 << 47), Backings())
    served = SessionServer(broker, tmp_path / "session.sock")
    yield served
    for conn in set(served._conns.values()):  # the loop never ran: close what it would have
        served._close(conn)
    served.stop()


def blocked_client(server: SessionServer) -> tuple[Connection, socket.socket]:
    """A connection whose client has read nothing, so the next reply must wait in the outbox."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    mine.setblocking(False)
    conn = Connection(mine, Credentials(os.getuid(), os.getgid(), pid=os.getpid()))
    server._conns[conn.fd] = conn
    server._epoll.register(conn.fd, select.EPOLLIN)
    with pytest.raises(BlockingIOError):
        while True:
            mine.send(b"filler")
    return conn, theirs


def hello() -> session_pb2.HelloRequest:
    return session_pb2.HelloRequest(min_protocol_version=1, max_protocol_version=1, detach_channel=True)


def test_a_queued_hello_reply_hands_over_the_detach_channel_once_the_client_reads(server: SessionServer) -> None:
    conn, theirs = blocked_client(server)
    with theirs:
        server._hello(conn, 1, hello())
        [(_, _, handoff, passed)] = conn.outbox
        assert passed is not None and passed.fileno() >= 0 and not handoff  # not a memfd handoff
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            while True:
                assert theirs.recv(64) == b"filler"
        server._flush(conn)
        assert not conn.outbox and passed.fileno() == -1  # sent, and the broker's copy closed
        data, ancillary, _, _ = theirs.recvmsg(4096, socket.CMSG_SPACE(4))
        assert session_pb2.SessionResponse.FromString(data).hello.detach_channel
        [(_, _, fd_bytes)] = ancillary
        with socket.socket(fileno=int.from_bytes(fd_bytes, "little")) as channel:
            assert channel.type == socket.SOCK_SEQPACKET
            assert conn.channel is not None and conn.channel.fileno() in server._conns


def test_a_queued_hello_reply_dropped_with_its_connection_closes_what_it_would_pass(server: SessionServer) -> None:
    conn, theirs = blocked_client(server)
    with theirs:
        server._hello(conn, 1, hello())
        [(_, _, _, passed)] = conn.outbox
        assert passed is not None
        channel = conn.channel
        server._close(conn)
        assert passed.fileno() == -1 and channel is not None and channel.fileno() == -1
        assert conn.channel is None and not server._conns
