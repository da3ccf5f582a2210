"""Unit test of the session loop's reused attach reply: refilled in part, it never carries a stale field."""

from __future__ import annotations

from mshare.v1 import resources_pb2, session_pb2
from mshared.records import Handoff
from mshared.regions import Access, PagePolicy
from mshared.sessions import AttachReply


def handoff(attachment_id: int, region_id: int, path: str, start: int, access: Access = Access.READ_WRITE) -> Handoff:
    return Handoff(attachment_id, region_id, "default", path, start, 2 << 20, PagePolicy.SMALL, access, 9)


def test_the_reused_attach_reply_never_carries_a_field_of_the_last_one() -> None:
    reply = AttachReply()
    sequence = [
        handoff(1, 10, "/a", 1 << 40),
        handoff(2, 10, "/a", 1 << 40),  # the same region again: only the ids change
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
