"""Unit tests of the SDK's session channel against a scripted peer: who owns a reply's fds."""

from __future__ import annotations

import array
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mshare._session import Session
from mshare.v1 import session_pb2


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Session, socket.socket]]:
    """A Session and the broker's end of its socket, played by the test."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(tmp_path / "session.sock"))
    listener.listen(1)
    session = Session(str(tmp_path / "session.sock"))
    peer, _ = listener.accept()
    listener.close()
    yield session, peer
    session.close()
    peer.close()


def reply_fds() -> set[int]:
    """This process's descriptors of the peer's memfds."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:reply"):
                found.add(int(name))
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return found


def reply_with_fd(peer: socket.socket, request_id: int) -> None:
    fd = os.memfd_create("reply", os.MFD_CLOEXEC)
    try:
        data = session_pb2.SessionResponse(request_id=request_id).SerializeToString()
        peer.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())])
    finally:
        os.close(fd)


def request_id_of(peer: socket.socket) -> int:
    return session_pb2.SessionRequest.FromString(peer.recv(65536)).request_id


def test_an_abandoned_request_has_its_reply_fds_closed_when_it_comes(pair: tuple[Session, socket.socket]) -> None:
    session, peer = pair
    abandoned = session.send(session_pb2.SessionRequest())
    session.abandon(abandoned)
    asked = session.send(session_pb2.SessionRequest())
    assert [request_id_of(peer), request_id_of(peer)] == [abandoned, asked]
    reply_with_fd(peer, abandoned)
    reply_with_fd(peer, asked)
    _, fds = session.reply(asked)  # reads past the abandoned reply, whose fd nobody owns
    assert len(fds) == 1 and reply_fds() == set(fds)
    os.close(fds[0])


def test_a_reply_kept_for_a_request_then_abandoned_is_closed(pair: tuple[Session, socket.socket]) -> None:
    """Another thread read the reply and kept it for its asker, who then gave up waiting."""
    session, peer = pair
    kept = session.send(session_pb2.SessionRequest())
    asked = session.send(session_pb2.SessionRequest())
    reply_with_fd(peer, kept)
    reply_with_fd(peer, asked)
    _, fds = session.reply(asked)  # keeps the other reply, fd and all, for its asker
    assert len(reply_fds()) == 2
    session.abandon(kept)
    assert reply_fds() == set(fds)
    os.close(fds[0])
