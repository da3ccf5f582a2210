"""Watches: the ordered events under a path, queued per watcher and bounded; pure Python."""

from __future__ import annotations

import collections
import enum
import threading
from dataclasses import dataclass
from typing import Final

from .records import EntryView
from .regions import Access
from .tree import R_OK, X_OK, Credentials, Directory, permits

#: Events a watcher may have queued before it is dropped as too slow.
QUEUE_LIMIT: Final = 4096


class EventKind(str, enum.Enum):
    EXISTING = "existing"  # the initial snapshot, one per entry
    SYNCED = "synced"  # the snapshot is complete; live events follow
    CREATED = "created"
    RENAMED = "renamed"
    UNLINKED = "unlinked"
    FREED = "freed"
    ATTACHED = "attached"
    DETACHED = "detached"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    namespace: str
    path: str
    entry: EntryView | None = None
    old_path: str = ""
    session_id: int = 0
    access: Access | None = None


class Overflow(Exception):
    """The watcher fell more than QUEUE_LIMIT events behind."""


def under(path: str, root: str, recursive: bool) -> bool:
    """Whether path is root itself, a child of root, or (recursive) anything below it."""
    if path == root:
        return True
    prefix = root if root.endswith("/") else root + "/"
    if not path.startswith(prefix):
        return False
    return recursive or "/" not in path[len(prefix) :]


class Watcher:
    """One watch stream's queue. The broker pushes under its lock; the stream's thread pops."""

    def __init__(
        self,
        watch_id: int,
        session_id: int,
        creds: Credentials,
        namespace: str,
        path: str,
        recursive: bool,
        limit: int = QUEUE_LIMIT,
    ) -> None:
        self.id = watch_id
        self.session_id = session_id
        self.creds = creds
        self.namespace = namespace
        self.path = path.rstrip("/") or "/"
        self.recursive = recursive
        self._limit = limit
        self._queue: collections.deque[Event] = collections.deque()
        # Guards the queue and the two flags; the broker holds its own lock around push().
        self._cond = threading.Condition(threading.Lock())
        self.closed = False
        self.overflowed = False
        self._snapshot_queued = 0  # snapshot events still queued: exempt from the limit

    def wants(self, namespace: str, path: str, parent: Directory | None, owner: int) -> bool:
        """An event about path (in directory parent) concerns this watcher and it may see it.

        Seeing it needs what listing the parent needs: search on every directory
        above and read on the parent. An entry whose name is gone (parent None)
        is visible to its owner and root only.
        """
        if namespace != self.namespace or not under(path, self.path, self.recursive):
            return False
        if parent is None:
            return self.creds.is_root or self.creds.uid == owner
        if not permits(parent, self.creds, R_OK | X_OK):
            return False
        return all(permits(d, self.creds, X_OK) for d in parent.ancestors())

    def push(self, event: Event, *, snapshot: bool = False) -> bool:
        """Queue an event; past the limit the watcher is dropped (the snapshot is exempt).

        Returns True when this push dropped the watcher.
        """
        with self._cond:
            if self.closed:
                return False
            dropped = not snapshot and len(self._queue) - self._snapshot_queued >= self._limit
            if dropped:
                self.overflowed = True
                self.closed = True
                self._queue.clear()
            else:
                self._queue.append(event)
                self._snapshot_queued += snapshot
            self._cond.notify()
            return dropped

    def pop(self, timeout: float) -> Event | None:
        """The next event; None on timeout or once closed and drained; Overflow if dropped."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self.closed, timeout)
            if self.overflowed:
                raise Overflow(f"the watcher fell more than {self._limit} events behind")
            if not self._queue:
                return None
            if self._snapshot_queued:
                self._snapshot_queued -= 1  # the snapshot comes first, so the head is one of it
            return self._queue.popleft()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify()
