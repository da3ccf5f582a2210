"""A session's last attach request, so that the same attach again skips the protobuf parse.

An SDK opening regions in a loop sends the same attach message over and over
with only its request id changed, and that id is the message's first field.
Parsing the message and reading its fields costs several microseconds on the
hot path (the parser's code is cold after every sleep of the session loop);
finding the id and comparing the rest of the bytes costs a fraction of that.
"""

from __future__ import annotations

from typing import Final, NamedTuple

#: The tag of SessionRequest.request_id (field 1, varint), which serializers write first.
_ID_TAG: Final = 0x08
#: The end of the longest id field: the tag and a uint64 varint's ten bytes at most.
_ID_END_MAX: Final = 11
#: Longest request remembered: a 4096-byte path and change; longer ones are parsed every time.
REMEMBER_MAX: Final = 8 * 1024


class AttachTarget(NamedTuple):
    """What an attach request names: the fields the session loop serves it from."""

    namespace: str
    path: str
    region_id: int
    access: int  # a resources_pb2.Access number, refused when served if unknown


def id_field(data: bytes, end: int) -> int:
    """The request id when data[:end] is exactly its field (the tag, then one varint); else -1."""
    if not 1 < end <= _ID_END_MAX or data[0] != _ID_TAG or data[end - 1] > 0x7F:
        return -1
    value = 0
    for byte in data[end - 2 : 0 : -1]:  # the varint's other bytes, most significant first
        if byte < 0x80:
            return -1  # the varint ends before end
        value = value << 7 | byte & 0x7F
    value = value | data[end - 1] << 7 * (end - 2)
    return value if value >> 64 == 0 else -1


def leading_id(data: bytes) -> tuple[int, int]:
    """The request id when it is the packet's first field, and where the rest starts; else (-1, 0)."""
    for end in range(2, min(len(data), _ID_END_MAX) + 1):
        if data[end - 1] < 0x80:
            return id_field(data, end), end
    return -1, 0


_NOTHING: Final = AttachTarget("", "", 0, 0)


class RepeatedAttach:
    """One connection's last attach: its bytes after the request id, and what it names.

    A packet matches only when everything after its id is byte for byte the
    remembered attach, whose full parse gave that very id from the same
    leading field: the parse of the new packet would give its id and the
    same fields.
    """

    __slots__ = ("_rest", "target")

    def __init__(self) -> None:
        self._rest = b""  # empty: nothing remembered, nothing matches
        self.target = _NOTHING

    def match(self, data: bytes) -> int:
        """The request id when data is the remembered attach with a new id, else -1."""
        rest = self._rest
        if not rest or not data.endswith(rest):
            return -1
        return id_field(data, len(data) - len(rest))

    def remember(self, data: bytes, request_id: int, target: AttachTarget) -> None:
        """Remember an attach just parsed from data, if its id leads the packet."""
        parsed_id, rest = leading_id(data)
        if parsed_id == request_id and len(data) <= REMEMBER_MAX:
            self._rest, self.target = data[rest:], target
