"""Unit tests of what the session loop reads off the wire before parsing, and of its reused attach reply."""

from __future__ import annotations

import pytest

from mshare.v1 import resources_pb2, session_pb2
from mshared.records import Handoff
from mshared.regions import Access, PagePolicy
from mshared.sessions import AttachReply, is_detach


def detach(request_id: int) -> bytes:
    message = session_pb2.SessionRequest(request_id=request_id)
    message.detach.attachment_ids.extend([42, 1 << 40])
    return message.SerializeToString()


@pytest.mark.parametrize("request_id", [1, 42, 127, 128, 300, 1 << 32, 1 << 63, (1 << 64) - 1])
def test_a_detach_is_told_by_its_first_bytes_whatever_its_request_id(request_id: int) -> None:
    assert is_detach(detach(request_id))
    others = (
        session_pb2.SessionRequest(request_id=request_id, attach=session_pb2.AttachRequest(path="/r", access=1)),
        session_pb2.SessionRequest(request_id=request_id, hello=session_pb2.HelloRequest(min_protocol_version=1)),
        session_pb2.SessionRequest(request_id=request_id, create=session_pb2.CreateAndAttachRequest(path="/r")),
        session_pb2.SessionRequest(request_id=request_id),
    )
    assert not any(is_detach(other.SerializeToString()) for other in others)


@pytest.mark.parametrize("data", [b"", b"\x08", b"\x08\x80", b"\x08" + b"\xff" * 20 + b"\x2a", b"\x2a\x00", b"\xff garbage"])
def test_truncated_or_foreign_packets_are_not_detaches(data: bytes) -> None:
    assert not is_detach(data)


def handoff(attachment_id: int, region_id: int, path: str, start: int, access: Access = Access.READ_WRITE) -> Handoff:
    return Handoff(attachment_id, region_id, "default", path, start, 2 << 20, PagePolicy.SMALL, access, 9)


def test_the_reused_attach_reply_never_carries_a_field_of_the_last_one() -> None:
    reply = AttachReply()
    sequence = [
        handoff(1, 10, "/a", 1 << 40),
        handoff(2, 10, "/a", 1 << 40),  # same region: only the ids change
        handoff(3, 11, "/b", 2 << 40),
        handoff(4, 11, "/b", 2 << 40, Access.READ_ONLY),
        handoff(5, 10, "/a", 1 << 40),
        handoff(6, 12, "/a", 1 << 40),  # the name and the range, reused by a new region
    ]
    for request_id, expected in enumerate(sequence, start=100):
        sent = session_pb2.SessionResponse.FromString(reply.fill(request_id, expected).SerializeToString())
        desc = sent.attach.descriptor
        assert sent.request_id == request_id and not sent.HasField("error")
        assert (desc.attachment_id, desc.region_id, desc.path, desc.start) == expected[:2] + expected[3:5]
        access = resources_pb2.ACCESS_READ_ONLY if expected.access is Access.READ_ONLY else resources_pb2.ACCESS_READ_WRITE
        assert (desc.namespace, desc.size_bytes, desc.access) == ("default", 2 << 20, access)
