"""Unit tests of RepeatedAttach: a repeated attach is recognized without a parse, and only then."""

from __future__ import annotations

import random

import pytest

from mshare.v1 import resources_pb2, session_pb2
from mshared.repeats import REMEMBER_MAX, AttachTarget, RepeatedAttach

TARGET = AttachTarget("", "/bench", 0, resources_pb2.ACCESS_READ_WRITE)


def attach(request_id: int, path: str = "/bench", access: int = resources_pb2.ACCESS_READ_WRITE) -> bytes:
    request = session_pb2.SessionRequest(request_id=request_id)
    request.attach.path = path
    request.attach.access = access  # type: ignore[assignment]
    return request.SerializeToString()


def remembered(request_id: int = 5) -> RepeatedAttach:
    repeat = RepeatedAttach()
    repeat.remember(attach(request_id), request_id, TARGET)
    return repeat


def test_nothing_matches_before_an_attach_is_remembered() -> None:
    assert RepeatedAttach().match(attach(5)) == -1


@pytest.mark.parametrize("request_id", [1, 127, 128, 16383, 16384, 2**21, 2**35, 2**63, 2**64 - 1])
def test_the_same_attach_with_any_id_matches_and_gives_that_id(request_id: int) -> None:
    repeat = remembered()
    assert repeat.match(attach(request_id)) == request_id
    assert repeat.target == TARGET


def test_another_path_access_or_field_does_not_match() -> None:
    repeat = remembered()
    assert repeat.match(attach(6, path="/other")) == -1
    assert repeat.match(attach(6, access=resources_pb2.ACCESS_READ_ONLY)) == -1
    request = session_pb2.SessionRequest.FromString(attach(6))
    request.attach.namespace = "other"
    assert repeat.match(request.SerializeToString()) == -1
    assert repeat.match(b"") == -1


def test_a_request_that_does_not_lead_with_its_id_is_not_remembered() -> None:
    body = attach(0)  # no id field at all
    trailing = body + b"\x08\x05"  # the id after the body: valid protobuf, but not the leading field
    repeat = RepeatedAttach()
    repeat.remember(trailing, 5, TARGET)
    assert repeat.match(trailing) == -1


def test_a_request_too_long_to_keep_is_parsed_every_time() -> None:
    long_path = "/" + "x" * REMEMBER_MAX
    repeat = RepeatedAttach()
    repeat.remember(attach(5, path=long_path), 5, TARGET)
    assert repeat.match(attach(6, path=long_path)) == -1


def test_a_match_always_agrees_with_the_parser() -> None:
    """Random id fields before the remembered rest: whatever matches parses to that id and the same attach."""
    rng = random.Random(7)
    repeat = remembered()
    rest = attach(5)[2:]
    matched = 0
    for _ in range(20000):
        head = bytes([0x08, *(rng.randrange(256) for _ in range(rng.randrange(1, 12)))])
        request_id = repeat.match(head + rest)
        if request_id < 0:
            continue
        matched += 1
        parsed = session_pb2.SessionRequest.FromString(head + rest)
        assert (parsed.request_id, parsed.attach.path) == (request_id, "/bench")
    assert matched > 1000  # the test exercised matches, not only refusals
