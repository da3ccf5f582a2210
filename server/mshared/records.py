"""What the broker keeps per session, and the snapshots it hands out: pure Python."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

from .regions import Access, Attachment, PagePolicy, Region, State, pagetable_bytes
from .tree import Credentials


@dataclass(frozen=True, slots=True)
class EntryView:
    """A snapshot of one entry, taken under the lock: what stat reports."""

    id: int
    namespace: str
    path: str
    is_directory: bool
    start: int
    size: int
    mode: int
    uid: int
    gid: int
    policy: PagePolicy | None
    attach_count: int
    state: State | None
    created_ns: int

    @property
    def pagetable_bytes(self) -> int:
        """Estimated page-table bytes its attachers need with its page policy (0 for directories)."""
        return pagetable_bytes(self.policy, self.start, self.size, self.attach_count) if self.policy else 0

    @property
    def pagetable_bytes_4k(self) -> int:
        """The same estimate with 4 KiB pages."""
        return pagetable_bytes(PagePolicy.SMALL, self.start, self.size, self.attach_count) if self.policy else 0


@dataclass(frozen=True, slots=True)
class AttachmentView:
    id: int
    region_id: int
    namespace: str
    path: str
    access: Access


@dataclass(frozen=True, slots=True)
class SessionView:
    id: int
    creds: Credentials
    namespace: str
    client_version: str
    attachments: tuple[AttachmentView, ...]


@dataclass(slots=True)
class BrokerStats:
    """One reading of the broker's state for metrics, by namespace."""

    regions: dict[str, dict[State, list[int]]]  # [count, bytes]
    attachments: dict[str, dict[Access, int]] = field(default_factory=dict)
    resident: dict[str, int] = field(default_factory=dict)
    pagetable_saved: dict[str, int] = field(default_factory=dict)
    sessions: int = 0


class Handoff(NamedTuple):
    """What an attach hands out: the descriptor's fields and the fd to send (owned by the region).

    A NamedTuple: one is made per attach, and frozen dataclasses are slow to build.
    """

    attachment_id: int
    region_id: int
    namespace: str
    path: str
    start: int
    size: int
    policy: PagePolicy
    access: Access
    fd: int


class SessionRecord:
    """The broker's side of one session: identity, token, attachments, and how far it has been read."""

    __slots__ = (
        "_cond",
        "_seen",
        "_waiting",
        "attachments",
        "client_version",
        "closed",
        "creds",
        "id",
        "namespace",
        "resolved",
        "resolved_generation",
        "token",
    )

    def __init__(self, session_id: int, creds: Credentials, namespace: str, client_version: str) -> None:
        self.id = session_id
        self.creds = creds
        self.namespace = namespace
        self.token = secrets.token_hex(16)
        self.client_version = client_version
        self.attachments: dict[int, Attachment] = {}
        self.closed = False
        # The broker's cache of this session's opens by path: (namespace, path, access) -> region,
        # valid while the broker's generation equals resolved_generation.
        self.resolved: dict[tuple[str, str, Access], Region] = {}
        self.resolved_generation = -1
        self._seen = 0
        self._waiting = 0
        # Guards _seen only; gRPC threads wait on it for the session loop (never the reverse).
        self._cond = threading.Condition(threading.Lock())

    def mark_seen(self, request_id: int) -> None:
        """The session loop has handled every request up to request_id.

        Called for every request, so the lock is taken only when a call waits:
        a waiter counts itself before it checks _seen, and _seen is set before
        the count is read, so no wake-up is lost.
        """
        if request_id > self._seen:
            self._seen = request_id
            if self._waiting:
                with self._cond:
                    self._cond.notify_all()

    def wait_seen(self, request_id: int, timeout: float) -> bool:
        """Wait until the session loop has handled request_id, so a gRPC call sees earlier detaches."""
        if self._seen >= request_id:
            return True
        with self._cond:
            self._waiting += 1
            try:
                return self._cond.wait_for(lambda: self._seen >= request_id or self.closed, timeout)
            finally:
                self._waiting -= 1

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
