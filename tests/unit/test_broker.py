"""Unit tests of the Broker's regions, sessions, attachments and deferred unlink."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import pytest

from mshared.broker import Broker, EntryView, Handoff, NamespaceSpec, SessionRecord
from mshared.errors import BrokerError
from mshared.regions import Access, AddressSpace, GiB, KiB, MiB, PagePolicy, Region, State
from mshared.tree import Credentials
from mshared.watch import EventKind

from .backing import Backings, fd_of

ALIGN: Final = 2 * MiB
ARENA_START: Final = 64 * GiB
ARENA_SIZE: Final = GiB
ARENA_END: Final = ARENA_START + ARENA_SIZE
MIN_ADDRESS: Final = 1 * MiB
MAX_ADDRESS: Final = 1 << 47
#: A creator-named start well below the arena.
LOW: Final = 8 * GiB

ROOT: Final = Credentials(0, 0)
ALICE: Final = Credentials(1000, 100, frozenset({100}), pid=4242)
BOB: Final = Credentials(1001, 100)
DAVE: Final = Credentials(1003, 1003)


@dataclass
class World:
    broker: Broker
    backings: Backings

    def session(self, creds: Credentials = ALICE, namespace: str = "default") -> SessionRecord:
        return self.broker.open_session(creds, namespace, "test")

    def create(
        self,
        session: SessionRecord,
        path: str,
        size: int = ALIGN,
        *,
        mode: int = 0o644,
        start: int = 0,
        policy: PagePolicy | None = None,
        namespace: str = "",
    ) -> EntryView:
        view, handoff = self.broker.create_region(session, namespace, path, size, mode, start, policy, attach=False)
        assert handoff is None
        return view

    def create_attached(self, session: SessionRecord, path: str, size: int = ALIGN) -> tuple[EntryView, Handoff]:
        view, handoff = self.broker.create_region(session, "", path, size, 0o644, 0, None, attach=True)
        assert handoff is not None
        return view, handoff

    def region(self, region_id: int) -> EntryView:
        return {view.id: view for view in self.broker.regions_snapshot()}[region_id]

    def closes(self) -> dict[int, int]:
        return {region_id: backing.closes for region_id, backing in self.backings.made.items()}


def make_world(
    *,
    arena_size: int = ARENA_SIZE,
    policies: tuple[PagePolicy, ...] = (PagePolicy.SMALL,),
    other_policy: PagePolicy = PagePolicy.SMALL,
) -> World:
    specs = [NamespaceSpec("default", ALIGN, PagePolicy.SMALL), NamespaceSpec("other", ALIGN, other_policy)]
    backings = Backings()
    space = AddressSpace(ARENA_START, arena_size, MIN_ADDRESS, MAX_ADDRESS)
    return World(Broker(specs, space, backings, policies=policies), backings)


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture
def alice(world: World) -> SessionRecord:
    return world.session(ALICE)


@contextmanager
def refused(code: int) -> Iterator[None]:
    with pytest.raises(BrokerError) as info:
        yield
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value}"


RO: Final = Access.READ_ONLY
RW: Final = Access.READ_WRITE


# -- create ---------------------------------------------------------------------------------------


def test_create_reports_the_region(world: World, alice: SessionRecord) -> None:
    view = world.create(alice, "/r", 3 * ALIGN, mode=0o4751)
    assert (view.path, view.namespace, view.is_directory) == ("/r", "default", False)
    assert (view.start, view.size) == (ARENA_START, 3 * ALIGN)
    assert (view.mode, view.uid, view.gid) == (0o751, ALICE.uid, ALICE.gid)
    assert (view.policy, view.state, view.attach_count) == (PagePolicy.SMALL, State.ACTIVE, 0)
    assert world.broker.stat(BOB, "default", "/r") == view
    assert world.broker.region_count() == 1
    assert world.broker.space.free_bytes == ARENA_SIZE - 3 * ALIGN


def test_the_factory_sees_the_final_geometry(world: World, alice: SessionRecord) -> None:
    seen: list[tuple[int, int, int, PagePolicy, str]] = []
    world.backings.before = lambda region: seen.append((region.id, region.start, region.size, region.policy, region.namespace))
    view = world.create(alice, "/r", 2 * ALIGN, start=LOW)
    assert seen == [(view.id, LOW, 2 * ALIGN, PagePolicy.SMALL, "default")]


def test_create_places_regions_lowest_first(world: World, alice: SessionRecord) -> None:
    starts = [world.create(alice, f"/r{i}", size).start for i, size in enumerate((ALIGN, 2 * ALIGN, ALIGN))]
    assert starts == [ARENA_START, ARENA_START + ALIGN, ARENA_START + 3 * ALIGN]
    world.broker.unlink(ALICE, "default", "/r1")
    assert world.create(alice, "/small", ALIGN).start == ARENA_START + ALIGN
    assert world.create(alice, "/big", 2 * ALIGN).start == ARENA_START + 4 * ALIGN
    assert world.create(alice, "/fill", ALIGN).start == ARENA_START + 2 * ALIGN


def test_create_with_attach_hands_out_a_read_write_fd(world: World, alice: SessionRecord) -> None:
    view, handoff = world.create_attached(alice, "/r")
    assert (handoff.region_id, handoff.namespace, handoff.path) == (view.id, "default", "/r")
    assert (handoff.start, handoff.size, handoff.policy) == (view.start, view.size, PagePolicy.SMALL)
    assert handoff.access is RW and handoff.fd == fd_of(view.id, RW)
    assert view.attach_count == 1 and world.backings.made[view.id].handed == [RW]
    assert list(alice.attachments) == [handoff.attachment_id]


def test_create_in_a_named_namespace(world: World, alice: SessionRecord) -> None:
    view = world.create(alice, "/r", namespace="other")
    assert view.namespace == "other"
    assert world.broker.stat(ALICE, "other", "/r").id == view.id
    with refused(errno.ENOENT):
        world.broker.stat(ALICE, "default", "/r")
    with refused(errno.ENOENT):
        world.create(alice, "/r", namespace="missing")
    with refused(errno.ENOENT):
        world.session(ALICE, "missing")


def test_create_refuses_an_existing_name(world: World, alice: SessionRecord) -> None:
    world.create(alice, "/r")
    world.broker.mkdir(ALICE, "default", "/d", 0o755)
    for path in ("/r", "//r", "/d", "/"):
        with refused(errno.EEXIST):
            world.create(alice, path)
    assert world.broker.region_count() == 1 and world.backings.calls == 1


@pytest.mark.parametrize(
    ("size", "start", "policy"),
    [
        (0, 0, None),
        (-ALIGN, 0, None),
        (ALIGN // 2, 0, None),
        (ALIGN + 4 * KiB, 0, None),
        (ALIGN, LOW + 4 * KiB, None),
        (ALIGN, -ALIGN, None),
        (ALIGN, 0, PagePolicy.THP),
        (ALIGN, 0, PagePolicy.HUGETLB_2M),
        (ALIGN, 0, PagePolicy.HUGETLB_1G),
        (2 * ALIGN, ARENA_START - ALIGN, None),
        (2 * ALIGN, ARENA_END - ALIGN, None),
        (ALIGN, MAX_ADDRESS, None),
    ],
    ids=[
        "size-zero",
        "size-negative",
        "size-below-alignment",
        "size-misaligned",
        "start-misaligned",
        "start-negative",
        "thp-unavailable",
        "hugetlb-2m-unavailable",
        "hugetlb-1g-unavailable",
        "straddles-arena-start",
        "straddles-arena-end",
        "beyond-max-address",
    ],
)
def test_create_refuses_bad_geometry_with_einval(
    world: World, alice: SessionRecord, size: int, start: int, policy: PagePolicy | None
) -> None:
    with refused(errno.EINVAL):
        world.create(alice, "/r", size, start=start, policy=policy)
    with refused(errno.ENOENT):
        world.broker.stat(ALICE, "default", "/r")
    assert world.broker.space.free_bytes == ARENA_SIZE and world.backings.calls == 0
    assert world.create(alice, "/r", ALIGN, start=LOW).start == LOW


def test_an_unavailable_namespace_default_policy_is_einval() -> None:
    world = make_world(other_policy=PagePolicy.THP)
    session = world.session(ALICE, "other")
    with refused(errno.EINVAL):
        world.create(session, "/r")
    assert world.create(session, "/r", policy=PagePolicy.SMALL).policy is PagePolicy.SMALL


def test_offered_policies_can_be_chosen() -> None:
    world = make_world(policies=(PagePolicy.SMALL, PagePolicy.THP), other_policy=PagePolicy.THP)
    session = world.session()
    assert world.create(session, "/t", policy=PagePolicy.THP).policy is PagePolicy.THP
    assert world.create(session, "/d", namespace="other").policy is PagePolicy.THP
    with refused(errno.EINVAL):
        world.create(session, "/h", policy=PagePolicy.HUGETLB_2M)


@pytest.mark.parametrize(
    ("size", "start", "policy"),
    [
        (ALIGN + 4 * KiB, LOW, None),
        (0, LOW, None),
        (ALIGN, LOW + 4 * KiB, None),
        (ALIGN, LOW, PagePolicy.THP),
        (2 * ALIGN, ARENA_END - ALIGN, None),
    ],
    ids=["size-misaligned", "size-zero", "start-misaligned", "policy-unavailable", "straddles-arena"],
)
def test_einval_is_checked_before_eaddrinuse(
    world: World, alice: SessionRecord, size: int, start: int, policy: PagePolicy | None
) -> None:
    world.create(alice, "/low", 2 * ALIGN, start=LOW)
    world.create(alice, "/top", ALIGN, start=ARENA_END - ALIGN)
    with refused(errno.EINVAL):
        world.create(alice, "/r", size, start=start, policy=policy)
    assert world.broker.address_conflicts_total == 0


def test_an_overlapping_start_is_eaddrinuse_and_counted(world: World, alice: SessionRecord) -> None:
    placed = world.create(alice, "/placed", 2 * ALIGN)
    world.create(alice, "/low", 2 * ALIGN, start=LOW)
    clashes = [(placed.start + ALIGN, 2 * ALIGN), (placed.start, ALIGN), (LOW - ALIGN, 2 * ALIGN), (LOW + ALIGN, ALIGN)]
    for count, (start, size) in enumerate(clashes, 1):
        with pytest.raises(BrokerError) as info:
            world.create(alice, "/clash", size, start=start)
        assert info.value.errno == errno.EADDRINUSE and info.value.path == "/clash"
        assert world.broker.address_conflicts_total == count
    with refused(errno.ENOENT):
        world.broker.stat(ALICE, "default", "/clash")
    assert world.create(alice, "/after", ALIGN, start=LOW + 2 * ALIGN).start == LOW + 2 * ALIGN
    assert world.create(alice, "/before", ALIGN, start=LOW - ALIGN).start == LOW - ALIGN
    assert world.create(alice, "/next", ALIGN, start=placed.start + 2 * ALIGN).start == placed.start + 2 * ALIGN
    assert world.broker.address_conflicts_total == len(clashes) and world.backings.calls == 5


def test_an_unlinked_but_attached_region_keeps_its_range(world: World, alice: SessionRecord) -> None:
    view, _ = world.create_attached(alice, "/r")
    world.broker.unlink(ALICE, "default", "/r")
    with refused(errno.EADDRINUSE):
        world.create(alice, "/r", start=view.start)
    assert world.broker.address_conflicts_total == 1


def test_named_starts_inside_and_outside_the_arena(world: World, alice: SessionRecord) -> None:
    assert world.create(alice, "/in", ALIGN, start=ARENA_START + ALIGN).start == ARENA_START + ALIGN
    assert world.create(alice, "/a", ALIGN).start == ARENA_START
    assert world.create(alice, "/b", ALIGN).start == ARENA_START + 2 * ALIGN
    assert world.create(alice, "/out", ALIGN, start=LOW).start == LOW
    assert world.create(alice, "/high", ALIGN, start=ARENA_END).start == ARENA_END
    assert world.broker.space.free_bytes == ARENA_SIZE - 3 * ALIGN
    for path in ("/in", "/out", "/high"):
        world.broker.unlink(ALICE, "default", path)
    assert world.create(alice, "/out2", ALIGN, start=LOW).start == LOW
    assert world.create(alice, "/high2", ALIGN, start=ARENA_END).start == ARENA_END
    assert world.create(alice, "/c", ALIGN).start == ARENA_START + ALIGN


def test_enomem_when_the_arena_is_full() -> None:
    world = make_world(arena_size=4 * ALIGN)
    session = world.session()
    world.create(session, "/a", 3 * ALIGN)
    with refused(errno.ENOMEM):
        world.create(session, "/b", 2 * ALIGN)
    with refused(errno.ENOENT):
        world.broker.stat(ALICE, "default", "/b")
    assert world.broker.address_conflicts_total == 0 and world.backings.calls == 1
    assert world.create(session, "/b", ALIGN).start == ARENA_START + 3 * ALIGN
    with refused(errno.ENOMEM):
        world.create(session, "/c", ALIGN)
    assert world.create(session, "/c", ALIGN, start=LOW).start == LOW


def test_region_ids_are_never_reused(world: World, alice: SessionRecord) -> None:
    ids = []
    for _ in range(3):
        ids.append(world.create(alice, "/r").id)
        world.broker.unlink(ALICE, "default", "/r")
    world.backings.error = BrokerError(errno.ENOMEM)
    with refused(errno.ENOMEM):
        world.create(alice, "/r")
    world.backings.error = None
    ids.append(world.create(alice, "/r").id)
    ids.append(world.broker.mkdir(ALICE, "default", "/d", 0o755).id)
    ids.append(world.create(alice, "/r", namespace="other").id)
    ids.append(world.session(BOB).id)
    ids.append(world.create(alice, "/d/r").id)
    assert ids == sorted(set(ids))


# -- attach and detach ----------------------------------------------------------------------------


def test_attach_by_path_and_by_id(world: World, alice: SessionRecord) -> None:
    view = world.create(alice, "/r", mode=0o644)
    bob = world.session(BOB)
    ro = world.broker.attach(bob, "default", "/r", 0, RO)
    rw = world.broker.attach(alice, "", "", view.id, RW)
    assert (ro.region_id, ro.namespace, ro.path, ro.start, ro.size, ro.access) == (
        view.id,
        "default",
        "/r",
        view.start,
        view.size,
        RO,
    )
    assert (rw.region_id, rw.path, rw.access) == (view.id, "/r", RW)
    assert ro.fd == fd_of(view.id, RO) and rw.fd == fd_of(view.id, RW)
    assert ro.attachment_id != rw.attachment_id
    assert world.backings.made[view.id].handed == [RO, RW]
    assert world.broker.stat(ALICE, "default", "/r").attach_count == 2


#: What may happen between two opens of one path by one session, and what the second open must see.
CHANGES: Final[dict[str, tuple[Callable[[World], object], int | None]]] = {
    "chmod": (lambda w: w.broker.chmod(ROOT, "default", "/d/r", 0o600), errno.EACCES),
    "chmod of the directory": (lambda w: w.broker.chmod(ROOT, "default", "/d", 0o700), errno.EACCES),
    "chown": (lambda w: w.broker.chown(ROOT, "default", "/d/r", BOB.uid, -1), errno.EACCES),  # owner bits: none
    "unlink": (lambda w: w.broker.unlink(ROOT, "default", "/d/r"), errno.ENOENT),
    "rename": (lambda w: w.broker.rename(ROOT, "default", "/d/r", "", "/d/moved"), errno.ENOENT),
    "rename of the directory": (lambda w: w.broker.rename(ROOT, "default", "/d", "", "/e"), errno.ENOENT),
    "rename over it": (lambda w: w.broker.rename(ROOT, "default", "/d/other", "", "/d/r"), None),
    "create elsewhere": (lambda w: w.create(w.session(ROOT), "/d/more"), None),
}


@pytest.mark.parametrize("change", CHANGES)
def test_an_open_sees_every_change_since_the_last_open_of_the_path(world: World, change: str) -> None:
    root = world.session(ROOT)
    world.broker.mkdir(ROOT, "default", "/d", 0o755)
    first = world.create(root, "/d/r", mode=0o066)
    other = world.create(root, "/d/other", mode=0o666)
    bob = world.session(BOB)
    assert world.broker.attach(bob, "", "/d/r", 0, RW).region_id == first.id
    assert world.broker.attach(bob, "", "/d/r", 0, RW).region_id == first.id  # the second from the cache
    make_change, refusal = CHANGES[change]
    make_change(world)
    if refusal is not None:
        with refused(refusal):
            world.broker.attach(bob, "", "/d/r", 0, RW)
    else:
        expected = other.id if change == "rename over it" else first.id
        assert world.broker.attach(bob, "", "/d/r", 0, RW).region_id == expected


def test_cached_opens_are_per_session_and_per_access(world: World, alice: SessionRecord) -> None:
    view = world.create(alice, "/r", mode=0o640)
    world.broker.attach(alice, "", "/r", 0, RW)
    with refused(errno.EACCES):
        world.broker.attach(world.session(BOB), "", "/r", 0, RW)  # group r only
    world.broker.attach(world.session(BOB), "", "/r", 0, RO)
    with refused(errno.ENOENT):
        world.broker.attach(alice, "other", "/r", 0, RW)  # the same path in another namespace
    assert world.region(view.id).attach_count == 2


def test_attach_by_id_checks_the_same_permissions(world: World, alice: SessionRecord) -> None:
    view = world.create(alice, "/r", mode=0o640)
    with refused(errno.EACCES):
        world.broker.attach(world.session(DAVE), "", "", view.id, RO)
    with refused(errno.EACCES):
        world.broker.attach(world.session(BOB), "", "", view.id, RW)
    world.broker.attach(world.session(BOB), "", "", view.id, RO)
    world.broker.attach(world.session(ROOT), "", "", view.id, RW)
    assert world.region(view.id).attach_count == 2


def test_attach_by_id_refuses_what_cannot_be_opened(world: World, alice: SessionRecord) -> None:
    gone = world.create(alice, "/gone")
    held, _ = world.create_attached(alice, "/held")
    foreign = world.create(alice, "/foreign", namespace="other")
    world.broker.unlink(ALICE, "default", "/gone")
    world.broker.unlink(ALICE, "default", "/held")
    root_id = world.broker.stat(ALICE, "default", "/").id
    for region_id, namespace in (
        (gone.id, ""),
        (held.id, ""),
        (foreign.id, ""),
        (foreign.id, "default"),
        (10**9, ""),
        (root_id, ""),
    ):
        with refused(errno.ENOENT):
            world.broker.attach(alice, namespace, "", region_id, RO)
    with refused(errno.ENOENT):
        world.broker.attach(alice, "", "/gone", 0, RO)
    assert world.broker.attach(alice, "other", "", foreign.id, RO).namespace == "other"


def test_attach_count_is_per_region(world: World, alice: SessionRecord) -> None:
    world.create(alice, "/a")
    world.create(alice, "/b")
    world.create(alice, "/c")
    bob = world.session(BOB)
    for session, path in ((alice, "/a"), (alice, "/a"), (bob, "/a"), (bob, "/b")):
        world.broker.attach(session, "", path, 0, RO)
    counts = {view.path: view.attach_count for view in world.broker.regions_snapshot()}
    assert counts == {"/a": 3, "/b": 1, "/c": 0}
    sessions = {view.id: view for view in world.broker.sessions()}
    assert (sessions[alice.id].creds, sessions[alice.id].namespace, sessions[alice.id].client_version) == (
        ALICE,
        "default",
        "test",
    )
    assert [(a.path, a.access) for a in sessions[alice.id].attachments] == [("/a", RO), ("/a", RO)]
    assert sorted(a.path for a in sessions[bob.id].attachments) == ["/a", "/b"]


def test_detach_ignores_unknown_and_foreign_ids(world: World, alice: SessionRecord) -> None:
    view, handoff = world.create_attached(alice, "/r")
    world.broker.detach(world.session(BOB), [handoff.attachment_id, 10**9])
    assert world.region(view.id).attach_count == 1
    world.broker.detach(alice, [handoff.attachment_id, handoff.attachment_id])
    assert world.region(view.id).attach_count == 0 and alice.attachments == {}
    world.broker.detach(alice, [handoff.attachment_id])
    assert world.region(view.id).attach_count == 0
    assert world.region(view.id).state is State.ACTIVE and world.closes() == {view.id: 0}


def test_a_backing_that_cannot_hand_out_an_fd_refuses_the_attach(world: World, alice: SessionRecord) -> None:
    view = world.create(alice, "/r")
    world.backings.made[view.id].fd_error = OSError(errno.EMFILE, "Too many open files")
    with pytest.raises(BrokerError) as info:
        world.broker.attach(alice, "", "/r", 0, RO)
    assert info.value.errno == errno.EMFILE and info.value.path == "/r"
    assert world.region(view.id).attach_count == 0 and alice.attachments == {}


def test_metadata_changes_never_revoke_attachments(world: World, alice: SessionRecord) -> None:
    view, _ = world.create_attached(alice, "/r")
    bob = world.session(BOB)
    world.broker.attach(bob, "", "/r", 0, RO)
    world.broker.chmod(ALICE, "default", "/r", 0)
    world.broker.chown(ROOT, "default", "/r", DAVE.uid, DAVE.gid)
    world.broker.mkdir(ROOT, "default", "/d", 0o700)
    world.broker.rename(ROOT, "default", "/r", "", "/d/r")
    after = world.broker.stat(ROOT, "default", "/d/r")
    assert (after.id, after.attach_count, after.mode, after.uid) == (view.id, 2, 0, DAVE.uid)
    assert [a.path for s in world.broker.sessions() for a in s.attachments] == ["/d/r", "/d/r"]
    with refused(errno.EACCES):
        world.broker.attach(bob, "", "", view.id, RO)
    assert world.closes() == {view.id: 0}


# -- unlink and freeing ----------------------------------------------------------------------------


def test_unlink_frees_only_at_the_last_detach(world: World, alice: SessionRecord) -> None:
    view, mine = world.create_attached(alice, "/r")
    bob = world.session(BOB)
    bobs = world.broker.attach(bob, "", "/r", 0, RO)
    unlinked = world.broker.unlink(ALICE, "default", "/r")
    assert (unlinked.id, unlinked.state, unlinked.path, unlinked.attach_count) == (view.id, State.UNLINKED, "", 2)
    with refused(errno.ENOENT):
        world.broker.stat(ALICE, "default", "/r")
    with refused(errno.ENOENT):
        world.broker.attach(bob, "", "/r", 0, RO)
    with refused(errno.ENOENT):
        world.broker.attach(bob, "", "", view.id, RO)
    with refused(errno.ENOENT):
        world.broker.unlink(ALICE, "default", "/r")
    assert [a.path for s in world.broker.sessions() for a in s.attachments] == ["", ""]
    reused = world.create(alice, "/r")
    assert reused.id != view.id and reused.start == view.start + ALIGN
    assert world.region(view.id).state is State.UNLINKED
    world.broker.detach(alice, [mine.attachment_id])
    assert world.closes() == {view.id: 0, reused.id: 0}
    assert world.broker.freed_total["default"] == 0 and world.broker.region_count() == 2
    world.broker.detach(bob, [bobs.attachment_id])
    assert world.closes() == {view.id: 1, reused.id: 0}
    assert world.broker.freed_total["default"] == 1 and world.broker.region_count() == 1
    assert [v.id for v in world.broker.regions_snapshot()] == [reused.id]
    assert world.create(alice, "/third").start == view.start


def test_unlink_of_an_unattached_region_frees_it_at_once(world: World, alice: SessionRecord) -> None:
    view = world.create(alice, "/r", 2 * ALIGN)
    assert world.broker.unlink(ALICE, "default", "/r").state is State.UNLINKED
    assert world.closes() == {view.id: 1}
    assert world.broker.region_count() == 0 and world.broker.freed_total["default"] == 1
    assert world.broker.space.free_bytes == ARENA_SIZE
    assert world.create(alice, "/r", 2 * ALIGN).start == view.start


def test_the_backing_is_closed_exactly_once(world: World, alice: SessionRecord) -> None:
    view, first = world.create_attached(alice, "/r")
    for _ in range(3):
        world.broker.attach(alice, "", "/r", 0, RO)
    world.broker.unlink(ALICE, "default", "/r")
    world.broker.detach(alice, [first.attachment_id])
    world.broker.end_session(alice)
    world.broker.end_session(alice)
    world.broker.detach(alice, [first.attachment_id])
    assert world.closes() == {view.id: 1} and world.broker.freed_total["default"] == 1
    assert world.broker.space.free_bytes == ARENA_SIZE


def test_freed_total_is_counted_per_namespace(world: World, alice: SessionRecord) -> None:
    assert world.broker.freed_total == {"default": 0, "other": 0}
    for path in ("/a", "/b", "/c"):
        world.create(alice, path, namespace="other")
    world.create(alice, "/d")
    world.broker.unlink(ALICE, "other", "/a")
    world.broker.rename(ALICE, "other", "/b", "other", "/c")
    assert world.broker.freed_total == {"default": 0, "other": 2}


# -- sessions --------------------------------------------------------------------------------------


def test_end_session_detaches_everything(world: World, alice: SessionRecord) -> None:
    a, _ = world.create_attached(alice, "/a")
    b = world.create(alice, "/b")
    world.broker.attach(alice, "", "/b", 0, RO)
    world.broker.attach(alice, "", "/b", 0, RW)
    bob = world.session(BOB)
    world.broker.attach(bob, "", "/b", 0, RO)
    world.broker.unlink(ALICE, "default", "/a")
    assert world.broker.session_for_token(alice.token) is alice
    world.broker.end_session(alice)
    assert alice.closed and alice.attachments == {}
    assert world.broker.session_for_token(alice.token) is None
    assert [s.id for s in world.broker.sessions()] == [bob.id]
    assert world.closes() == {a.id: 1, b.id: 0}
    assert world.region(b.id).attach_count == 1 and world.region(b.id).state is State.ACTIVE
    assert world.broker.sessions_reclaimed_total == 1
    world.broker.end_session(alice)
    assert world.broker.sessions_reclaimed_total == 1
    with refused(errno.ENOENT):
        world.broker.attach(alice, "", "/b", 0, RO)
    assert world.region(b.id).attach_count == 1
    world.broker.end_session(bob)
    assert world.broker.sessions_reclaimed_total == 2 and world.region(b.id).attach_count == 0


def test_ending_a_session_without_attachments_is_not_a_reclaim(world: World, alice: SessionRecord) -> None:
    view, handoff = world.create_attached(alice, "/r")
    world.broker.detach(alice, [handoff.attachment_id])
    world.broker.end_session(alice)
    world.broker.end_session(world.session(BOB))
    assert world.broker.sessions_reclaimed_total == 0 and world.broker.sessions() == []
    assert world.region(view.id).state is State.ACTIVE


def test_sessions_are_distinct_with_fresh_tokens(world: World) -> None:
    first, second = world.session(ALICE), world.session(ALICE)
    assert first.id != second.id and first.token != second.token
    assert world.broker.session_for_token(second.token) is second
    assert world.broker.session_for_token("") is None


def test_session_request_watermark() -> None:
    session = SessionRecord(1, ALICE, "default", "test")
    assert not session.wait_seen(1, 0)
    session.mark_seen(3)
    session.mark_seen(2)
    assert session.wait_seen(3, 0) and not session.wait_seen(4, 0)
    session.close()
    assert session.wait_seen(10**6, 0)


# -- creating around a slow backing ----------------------------------------------------------------


def test_a_failed_backing_rolls_back_the_name_and_the_range(world: World, alice: SessionRecord) -> None:
    errors: list[Callable[[], BaseException]] = [
        lambda: BrokerError(errno.ENOMEM, "hugetlb pool too small"),
        lambda: OSError(errno.EMFILE, "Too many open files"),
        lambda: KeyboardInterrupt(),
    ]
    broker = world.broker
    for make_error in errors:
        for start in (0, LOW, ARENA_START + 4 * ALIGN):
            broker.mkdir(ALICE, "default", "/d", 0o755)
            error = make_error()
            world.backings.error = error
            with pytest.raises(type(error)) as info:
                broker.create_region(alice, "", "/d/r", 2 * ALIGN, 0o644, start, None, attach=True)
            assert info.value is error
            world.backings.error = None
            with refused(errno.ENOENT):
                broker.stat(ALICE, "default", "/d/r")
            assert broker.listdir(ALICE, "default", "/d") == ([], "")
            broker.rmdir(ALICE, "default", "/d")
            assert broker.region_count() == 0 and alice.attachments == {}
            assert broker.space.free_bytes == ARENA_SIZE
            broker.mkdir(ALICE, "default", "/d", 0o755)
            again = world.create(alice, "/d/r", 2 * ALIGN, start=start)
            assert again.start == (start or ARENA_START)
            broker.unlink(ALICE, "default", "/d/r")
            broker.rmdir(ALICE, "default", "/d")
    assert broker.address_conflicts_total == 0 and broker.freed_total["default"] == 9


def test_the_name_and_range_are_reserved_while_the_backing_is_made(world: World, alice: SessionRecord) -> None:
    broker = world.broker
    broker.mkdir(ALICE, "default", "/d", 0o777)
    broker.mkdir(ALICE, "default", "/empty", 0o777)
    world.create(alice, "/other")
    outcomes: dict[str, int] = {}

    def meanwhile(region: Region) -> None:
        world.backings.before = None
        bob = world.session(BOB)
        attempts: dict[str, Callable[[], object]] = {
            "create": lambda: world.create(bob, "/d/r"),
            "mkdir": lambda: broker.mkdir(BOB, "default", "/d/r", 0o755),
            "rename onto": lambda: broker.rename(ALICE, "default", "/other", "", "/d/r"),
            "rmdir parent": lambda: broker.rmdir(ALICE, "default", "/d"),
            "replace parent": lambda: broker.rename(ALICE, "default", "/empty", "", "/d"),
            "stat": lambda: broker.stat(ALICE, "default", "/d/r"),
            "attach": lambda: broker.attach(bob, "", "/d/r", 0, RO),
            "attach by id": lambda: broker.attach(bob, "", "", region.id, RO),
            "claim range": lambda: world.create(bob, "/elsewhere", start=region.start),
        }
        for name, attempt in attempts.items():
            with pytest.raises(BrokerError) as info:
                attempt()
            outcomes[name] = info.value.errno
        assert broker.listdir(ALICE, "default", "/d") == ([], "")

    world.backings.before = meanwhile
    view = world.create(alice, "/d/r")
    assert outcomes == {
        "create": errno.EEXIST,
        "mkdir": errno.EEXIST,
        "rename onto": errno.EBUSY,
        "rmdir parent": errno.ENOTEMPTY,
        "replace parent": errno.ENOTEMPTY,
        "stat": errno.ENOENT,
        "attach": errno.ENOENT,
        "attach by id": errno.ENOENT,
        "claim range": errno.EADDRINUSE,
    }
    assert broker.stat(ALICE, "default", "/d/r").id == view.id
    assert [v.path for v in broker.listdir(ALICE, "default", "/d")[0]] == ["/d/r"]


def test_create_with_attach_after_the_session_ended_does_not_attach(world: World, alice: SessionRecord) -> None:
    world.backings.before = lambda region: world.broker.end_session(alice)
    view, handoff = world.broker.create_region(alice, "", "/r", ALIGN, 0o644, 0, None, attach=True)
    assert handoff is None and view.attach_count == 0 and alice.attachments == {}
    assert world.broker.stat(ALICE, "default", "/r").state is State.ACTIVE
    assert world.backings.made[view.id].handed == [] and world.broker.sessions_reclaimed_total == 0


# -- hugetlb placement (SPEC §3) ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", [PagePolicy.HUGETLB_2M, PagePolicy.HUGETLB_1G])
def test_placed_hugetlb_regions_start_on_1gib_boundaries(policy: PagePolicy) -> None:
    world = make_world(arena_size=4 * GiB, policies=tuple(PagePolicy))
    session = world.session()
    world.create(session, "/small")
    assert world.create(session, "/huge", GiB, policy=policy).start % GiB == 0


@pytest.mark.parametrize(("size", "start"), [(ALIGN, 0), (GiB, LOW + ALIGN)], ids=["size", "start-over-live-range"])
def test_hugetlb_1g_geometry_is_checked_before_placement(size: int, start: int) -> None:
    world = make_world(arena_size=4 * GiB, policies=tuple(PagePolicy))
    session = world.session()
    world.create(session, "/live", GiB, start=LOW)
    with refused(errno.EINVAL):
        world.create(session, "/huge", size, start=start, policy=PagePolicy.HUGETLB_1G)


def test_a_rename_never_shows_a_watcher_the_end_it_cannot_list(world: World) -> None:
    broker = world.broker
    root = world.session(ROOT)
    broker.mkdir(ROOT, "default", "/pub", 0o755)
    broker.mkdir(ROOT, "default", "/secret", 0o700)
    world.create(root, "/pub/r")
    world.create(root, "/secret/s")
    watcher = broker.watch(world.session(ALICE), "", "/", recursive=True)
    snapshot = [watcher.pop(0) for _ in range(4)]
    assert [e.path for e in snapshot if e is not None] == ["/pub", "/secret", "/pub/r", "/"]
    broker.rename(ROOT, "default", "/pub/r", "", "/secret/hidden")
    broker.rename(ROOT, "default", "/secret/s", "", "/pub/arrived")
    gone, came = watcher.pop(0), watcher.pop(0)
    assert gone is not None and came is not None and watcher.pop(0) is None
    assert (gone.kind, gone.path, gone.old_path) == (EventKind.UNLINKED, "/pub/r", "")
    assert gone.entry is not None and gone.entry.path == "/pub/r"
    assert (came.kind, came.path, came.old_path) == (EventKind.CREATED, "/pub/arrived", "")
