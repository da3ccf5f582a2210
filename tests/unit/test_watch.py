"""Unit tests of watchers: matching, the bounded queue, and the snapshot's exemption from it."""

from __future__ import annotations

import pytest

from mshared.tree import Credentials, Directory
from mshared.watch import Event, EventKind, Overflow, Watcher, under

ROOT = Credentials(0, 0)


def event(path: str, kind: EventKind = EventKind.CREATED) -> Event:
    return Event(kind, "default", path)


@pytest.mark.parametrize(
    ("path", "root", "recursive", "expected"),
    [
        ("/a", "/", False, True),
        ("/a/b", "/", False, False),
        ("/a/b", "/", True, True),
        ("/a", "/a", False, True),
        ("/ab", "/a", True, False),
        ("/a/b/c", "/a", False, False),
        ("/a/b/c", "/a", True, True),
    ],
)
def test_under(path: str, root: str, recursive: bool, expected: bool) -> None:
    assert under(path, root, recursive) is expected


def test_a_watcher_that_falls_behind_is_dropped() -> None:
    watcher = Watcher(1, 1, ROOT, "default", "/", False, limit=3)
    assert not any(watcher.push(event(f"/{i}")) for i in range(3))
    assert watcher.push(event("/3"))  # the push that overflows drops it
    assert watcher.closed and watcher.overflowed
    assert not watcher.push(event("/4"))  # counted once
    with pytest.raises(Overflow):
        watcher.pop(0)


def test_a_large_snapshot_does_not_count_against_the_limit() -> None:
    watcher = Watcher(1, 1, ROOT, "default", "/", False, limit=3)
    for i in range(10):
        watcher.push(event(f"/{i}", EventKind.EXISTING), snapshot=True)
    watcher.push(event("/", EventKind.SYNCED), snapshot=True)
    assert not any(watcher.push(event(f"/live{i}")) for i in range(3))
    kinds = [watcher.pop(0) for _ in range(14)]
    assert [e.kind for e in kinds if e is not None].count(EventKind.EXISTING) == 10
    assert kinds[-1] is not None and kinds[-1].path == "/live2"
    assert watcher.pop(0) is None and not watcher.closed


def test_wants_needs_what_listing_needs() -> None:
    parent = Directory(2, 0o700, 0, 0)
    alice = Credentials(1000, 1000)
    watcher = Watcher(1, 1, alice, "default", "/", True)
    assert not watcher.wants("default", "/x/r", parent, owner=1000)
    parent.mode = 0o755
    assert watcher.wants("default", "/x/r", parent, owner=0)
    assert not watcher.wants("other", "/x/r", parent, owner=0)
    assert watcher.wants("default", "/gone", None, owner=1000)  # unlinked: its owner still sees it
    assert not watcher.wants("default", "/gone", None, owner=0)
