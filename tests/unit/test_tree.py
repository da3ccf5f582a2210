"""Unit tests of namespace trees: path rules, POSIX permissions, directories, rename and listings."""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import pytest

from mshared.broker import MAX_ID, MAX_PAGE_SIZE, Broker, EntryView, NamespaceSpec, SessionRecord
from mshared.errors import BrokerError
from mshared.regions import Access, AddressSpace, GiB, MiB, PagePolicy, State
from mshared.tree import (
    NAME_MAX,
    PATH_MAX,
    R_OK,
    W_OK,
    X_OK,
    Credentials,
    Directory,
    new_entry_gid,
    permits,
    require_owner,
    require_sticky,
    split_path,
)

from .backing import Backings

ALIGN: Final = 2 * MiB
ARENA_START: Final = 64 * GiB
ARENA_SIZE: Final = GiB
MIN_ADDRESS: Final = 1 * MiB
MAX_ADDRESS: Final = 1 << 47

STAFF: Final = 100
ROOT: Final = Credentials(0, 0)
ALICE: Final = Credentials(1000, STAFF)
#: Shares ALICE's primary group.
BOB: Final = Credentials(1001, STAFF)
#: In ALICE's group only through a supplementary group.
CAROL: Final = Credentials(1002, 1002, frozenset({STAFF}))
#: In no group anyone else uses: always the "other" class.
DAVE: Final = Credentials(1003, 1003)


@dataclass
class World:
    broker: Broker
    backings: Backings

    def session(self, creds: Credentials, namespace: str = "default") -> SessionRecord:
        return self.broker.open_session(creds, namespace, "test")

    def region(self, creds: Credentials, path: str, mode: int = 0o644, namespace: str = "default") -> EntryView:
        view, _ = self.broker.create_region(self.session(creds, namespace), namespace, path, ALIGN, mode, 0, None, attach=False)
        return view

    def attach(self, creds: Credentials, path: str, access: Access = Access.READ_ONLY) -> None:
        self.broker.attach(self.session(creds), "default", path, 0, access)

    def names(self, creds: Credentials, path: str, namespace: str = "default") -> list[str]:
        views, token = self.broker.listdir(creds, namespace, path)
        assert token == ""
        return [view.path.rsplit("/", 1)[-1] for view in views]


def make_world(*extra: str) -> World:
    specs = [NamespaceSpec(name, ALIGN, PagePolicy.SMALL) for name in ("default", *extra)]
    backings = Backings()
    space = AddressSpace(ARENA_START, ARENA_SIZE, MIN_ADDRESS, MAX_ADDRESS)
    return World(Broker(specs, space, backings, policies=(PagePolicy.SMALL,)), backings)


@pytest.fixture
def world() -> World:
    return make_world()


@contextmanager
def refused(code: int) -> Iterator[None]:
    with pytest.raises(BrokerError) as info:
        yield
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value}"


# -- split_path -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/", ()),
        ("//", ()),
        ("/a", ("a",)),
        ("/a/b", ("a", "b")),
        ("/a/b/", ("a", "b")),
        ("//a///b//", ("a", "b")),
        ("/...", ("...",)),
        ("/.hidden/..x/x..", (".hidden", "..x", "x..")),
        ("/ü/日本", ("ü", "日本")),
    ],
)
def test_split_path_accepts(path: str, names: tuple[str, ...]) -> None:
    assert split_path(path) == names


@pytest.mark.parametrize(
    "path", ["", "a", "a/b", "./a", " /a", "/a\0b", "/\0", "/.", "/..", "/a/.", "/a/..", "/a/./b", "/a/../b", "/./"]
)
def test_split_path_refuses_with_einval(path: str) -> None:
    with refused(errno.EINVAL):
        split_path(path)


def test_split_path_name_max_counts_utf8_bytes() -> None:
    assert split_path("/" + "x" * NAME_MAX) == ("x" * NAME_MAX,)
    assert split_path("/" + "é" * 127) == ("é" * 127,)
    assert split_path("/" + "€" * 85) == ("€" * 85,)
    for name in ("x" * (NAME_MAX + 1), "é" * 128, "€" * 86):
        with refused(errno.ENAMETOOLONG):
            split_path("/ok/" + name + "/ok")


def test_split_path_path_max_counts_utf8_bytes() -> None:
    # 16 components of 1 + 254 bytes, then 1 + 15: exactly PATH_MAX.
    exact = ("/" + "a" * 254) * 16 + "/" + "b" * 15
    assert len(exact.encode()) == PATH_MAX
    assert len(split_path(exact)) == 17
    with refused(errno.ENAMETOOLONG):
        split_path(exact + "c")
    wide = ("/" + "é" * 120) * 17
    assert len(wide) < PATH_MAX < len(wide.encode())
    with refused(errno.ENAMETOOLONG):
        split_path(wide)
    with refused(errno.ENAMETOOLONG):
        split_path("/a" + "/" * PATH_MAX)


@pytest.mark.parametrize(
    ("mode", "creds", "want", "allowed"),
    [
        (0o700, ALICE, R_OK | W_OK | X_OK, True),  # owner class
        (0o077, ALICE, R_OK, False),  # the owner gets the owner bits only, never group or other
        (0o070, BOB, R_OK | W_OK | X_OK, True),  # primary group
        (0o707, BOB, R_OK, False),  # a group member gets the group bits only
        (0o040, CAROL, R_OK, True),  # supplementary group
        (0o007, CAROL, R_OK, False),
        (0o007, DAVE, R_OK | W_OK | X_OK, True),  # other class
        (0o770, DAVE, X_OK, False),
        (0o000, ROOT, R_OK | W_OK | X_OK, True),  # root bypasses
        (0o500, ALICE, W_OK, False),
        (0o600, ALICE, R_OK | X_OK, False),  # every wanted bit must be present
    ],
)
def test_permits_uses_exactly_one_class(mode: int, creds: Credentials, want: int, allowed: bool) -> None:
    node = Directory(1, mode, ALICE.uid, STAFF)
    assert permits(node, creds, want) is allowed


def test_credentials_groups() -> None:
    assert CAROL.in_group(STAFF) and CAROL.in_group(1002)
    assert not DAVE.in_group(STAFF)
    assert ROOT.is_root and not ALICE.is_root


def test_require_owner_and_sticky_primitives() -> None:
    sticky = Directory(1, 0o1777, ALICE.uid, STAFF)
    child = Directory(2, 0o755, BOB.uid, STAFF)
    for creds in (ALICE, BOB, ROOT):
        require_sticky(sticky, child, creds, "/x")
    with refused(errno.EPERM):
        require_sticky(sticky, child, CAROL, "/x")
    require_sticky(Directory(3, 0o777, ALICE.uid, STAFF), child, CAROL, "/x")
    require_owner(child, BOB, "/x")
    require_owner(child, ROOT, "/x")
    with refused(errno.EPERM):
        require_owner(child, ALICE, "/x")


def test_new_entry_gid_follows_setgid_parent() -> None:
    assert new_entry_gid(Directory(1, 0o2777, 0, 500), ALICE) == 500
    assert new_entry_gid(Directory(1, 0o0777, 0, 500), ALICE) == ALICE.gid


# -- directories --------------------------------------------------------------------------


def test_root_is_sticky_and_world_writable_by_default(world: World) -> None:
    root = world.broker.stat(DAVE, "default", "/")
    assert root.is_directory and root.mode == 0o1777 and root.uid == 0 and root.gid == 0
    assert root.path == "/"


def test_mkdir_reports_the_directory(world: World) -> None:
    view = world.broker.mkdir(ALICE, "default", "/a", 0o750)
    assert view.is_directory and view.path == "/a"
    assert (view.mode, view.uid, view.gid) == (0o750, ALICE.uid, ALICE.gid)
    assert view.policy is None and view.state is None and view.attach_count == 0
    assert world.broker.mkdir(ALICE, "default", "/a/b", 0o177777).mode == 0o7777
    assert world.broker.stat(BOB, "default", "/a/b").path == "/a/b"


def test_mkdir_refusals(world: World) -> None:
    world.broker.mkdir(ALICE, "default", "/a", 0o755)
    world.region(ALICE, "/r")
    cases: list[tuple[str, int]] = [
        ("/a", errno.EEXIST),
        ("/r", errno.EEXIST),
        ("/", errno.EEXIST),
        ("/missing/b", errno.ENOENT),
        ("/r/b", errno.ENOTDIR),
        ("relative", errno.EINVAL),
    ]
    for path, code in cases:
        with refused(code):
            world.broker.mkdir(ALICE, "default", path, 0o755)


def test_rmdir(world: World) -> None:
    world.broker.mkdir(ALICE, "default", "/a", 0o755)
    world.broker.mkdir(ALICE, "default", "/a/b", 0o755)
    world.region(ALICE, "/r")
    with refused(errno.ENOTEMPTY):
        world.broker.rmdir(ALICE, "default", "/a")
    with refused(errno.ENOTDIR):
        world.broker.rmdir(ALICE, "default", "/r")
    with refused(errno.EBUSY):
        world.broker.rmdir(ROOT, "default", "/")
    with refused(errno.ENOENT):
        world.broker.rmdir(ALICE, "default", "/nope")
    with refused(errno.ENOTDIR):
        world.broker.rmdir(ALICE, "default", "/r/x")
    world.broker.rmdir(ALICE, "default", "/a/b")
    world.broker.rmdir(ALICE, "default", "/a")
    with refused(errno.ENOENT):
        world.broker.stat(ALICE, "default", "/a")
    assert world.broker.mkdir(BOB, "default", "/a", 0o700).uid == BOB.uid


def test_unlink_and_open_of_a_directory_are_eisdir(world: World) -> None:
    world.broker.mkdir(ALICE, "default", "/d", 0o755)
    for path in ("/d", "/"):
        with refused(errno.EISDIR):
            world.broker.unlink(ALICE, "default", path)
        with refused(errno.EISDIR):
            world.attach(ALICE, path)
    with refused(errno.ENOENT):
        world.broker.unlink(ALICE, "default", "/nope")


def test_lookups_through_a_region_are_enotdir(world: World) -> None:
    world.region(ALICE, "/r")
    broker = world.broker
    attempts: list[Callable[[], object]] = [
        lambda: broker.stat(ALICE, "default", "/r/x"),
        lambda: broker.stat(ALICE, "default", "/r/x/y"),
        lambda: broker.mkdir(ALICE, "default", "/r/x", 0o755),
        lambda: broker.listdir(ALICE, "default", "/r"),
        lambda: broker.unlink(ALICE, "default", "/r/x"),
        lambda: broker.rename(ALICE, "default", "/r/x", "", "/y"),
        lambda: world.region(ALICE, "/r/x"),
        lambda: world.attach(ALICE, "/r/x"),
    ]
    for attempt in attempts:
        with refused(errno.ENOTDIR):
            attempt()


def test_unknown_namespace_is_enoent(world: World) -> None:
    with refused(errno.ENOENT):
        world.broker.stat(ALICE, "nope", "/")
    with refused(errno.ENOENT):
        world.broker.mkdir(ALICE, "nope", "/a", 0o755)


# -- permissions along paths --------------------------------------------------------------


@pytest.fixture
def nested(world: World) -> World:
    """/a/b/r owned by ALICE, everything readable and searchable by all."""
    world.broker.mkdir(ALICE, "default", "/a", 0o755)
    world.broker.mkdir(ALICE, "default", "/a/b", 0o777)
    world.region(ALICE, "/a/b/r", 0o666)
    return world


@pytest.mark.parametrize("closed", ["/a", "/a/b"])
def test_every_ancestor_needs_search_permission(nested: World, closed: str) -> None:
    broker = nested.broker
    region_id = broker.stat(BOB, "default", "/a/b/r").id
    broker.chmod(ALICE, "default", closed, 0o766)
    attempts: list[Callable[[], object]] = [
        lambda: broker.stat(BOB, "default", "/a/b/r"),
        lambda: nested.attach(BOB, "/a/b/r"),
        lambda: broker.attach(nested.session(BOB), "default", "", region_id, Access.READ_ONLY),
        lambda: nested.region(BOB, "/a/b/new"),
        lambda: broker.mkdir(BOB, "default", "/a/b/new", 0o755),
        lambda: broker.unlink(BOB, "default", "/a/b/r"),
        lambda: broker.rename(BOB, "default", "/a/b/r", "", "/moved"),
        lambda: broker.chmod(BOB, "default", "/a/b/r", 0o600),
    ]
    if closed == "/a":
        attempts.append(lambda: broker.listdir(BOB, "default", "/a/b"))
    for attempt in attempts:
        with refused(errno.EACCES):
            attempt()
    assert broker.stat(ALICE, "default", "/a/b/r").path == "/a/b/r"
    assert broker.stat(ROOT, "default", "/a/b/r").path == "/a/b/r"
    nested.attach(ROOT, "/a/b/r", Access.READ_WRITE)


def test_the_last_component_needs_no_search_permission(nested: World) -> None:
    nested.broker.chmod(ALICE, "default", "/a/b", 0o000)
    assert nested.broker.stat(BOB, "default", "/a/b").mode == 0o000


def test_listdir_needs_read_and_search_only_needs_execute(nested: World) -> None:
    broker = nested.broker
    broker.chmod(ALICE, "default", "/a", 0o711)
    with refused(errno.EACCES):
        broker.listdir(BOB, "default", "/a")
    assert nested.names(BOB, "/a/b") == ["r"]
    assert nested.names(ALICE, "/a") == ["b"]
    assert nested.names(ROOT, "/a") == ["b"]


@pytest.mark.parametrize(
    ("mode", "creds", "allowed"),
    [
        (0o755, BOB, False),
        (0o775, BOB, True),
        (0o775, CAROL, True),
        (0o775, DAVE, False),
        (0o773, DAVE, True),
        # Write without search is not enough to change a directory.
        (0o776, DAVE, False),
        (0o771, DAVE, False),
        (0o000, ROOT, True),
    ],
)
def test_changing_a_directory_needs_write_and_search(mode: int, creds: Credentials, allowed: bool) -> None:
    world = make_world()
    broker = world.broker
    broker.mkdir(ALICE, "default", "/d", 0o777)
    broker.mkdir(ALICE, "default", "/d/sub", 0o777)
    world.region(ALICE, "/d/r")
    world.region(creds, "/mine")
    broker.chmod(ALICE, "default", "/d", mode)
    attempts: list[Callable[[], object]] = [
        lambda: world.region(creds, "/d/new"),
        lambda: broker.mkdir(creds, "default", "/d/newdir", 0o755),
        lambda: broker.rename(creds, "default", "/d/r", "", "/d/r2"),
        lambda: broker.rename(creds, "default", "/mine", "", "/d/mine"),
        lambda: broker.unlink(creds, "default", "/d/mine" if allowed else "/d/r"),
        lambda: broker.rmdir(creds, "default", "/d/sub"),
    ]
    for attempt in attempts:
        if allowed:
            attempt()
        else:
            with refused(errno.EACCES):
                attempt()


@pytest.mark.parametrize(
    ("mode", "creds", "access", "allowed"),
    [
        (0o640, ALICE, Access.READ_WRITE, True),
        (0o440, ALICE, Access.READ_WRITE, False),
        (0o640, BOB, Access.READ_ONLY, True),
        (0o640, BOB, Access.READ_WRITE, False),
        (0o660, CAROL, Access.READ_WRITE, True),
        (0o640, DAVE, Access.READ_ONLY, False),
        (0o604, DAVE, Access.READ_ONLY, True),
        # Read-write needs r as well as w.
        (0o602, DAVE, Access.READ_WRITE, False),
        (0o604, CAROL, Access.READ_ONLY, False),
        (0o000, ROOT, Access.READ_WRITE, True),
    ],
)
def test_open_checks_the_region_mode(world: World, mode: int, creds: Credentials, access: Access, allowed: bool) -> None:
    world.region(ALICE, "/r", mode)
    if allowed:
        world.attach(creds, "/r", access)
    else:
        with refused(errno.EACCES):
            world.attach(creds, "/r", access)


# -- sticky, chmod, chown, setgid ----------------------------------------------------------


def test_sticky_root_protects_entries_from_others(world: World) -> None:
    broker = world.broker
    world.region(ALICE, "/r")
    broker.mkdir(ALICE, "default", "/d", 0o777)
    world.region(BOB, "/bobs")
    for attempt in (
        lambda: broker.unlink(BOB, "default", "/r"),
        lambda: broker.rename(BOB, "default", "/r", "", "/stolen"),
        lambda: broker.rename(BOB, "default", "/bobs", "", "/r"),
        lambda: broker.rmdir(BOB, "default", "/d"),
        lambda: broker.rename(BOB, "default", "/d", "", "/d2"),
    ):
        with refused(errno.EPERM):
            attempt()
    assert broker.stat(BOB, "default", "/r").uid == ALICE.uid
    broker.rename(BOB, "default", "/bobs", "", "/bobs2")
    broker.unlink(BOB, "default", "/bobs2")
    broker.rename(ALICE, "default", "/r", "", "/r2")
    broker.unlink(ROOT, "default", "/r2")
    broker.rmdir(ROOT, "default", "/d")


def test_sticky_directory_owner_may_remove_others_entries(world: World) -> None:
    broker = world.broker
    broker.mkdir(ALICE, "default", "/t", 0o1777)
    world.region(BOB, "/t/x")
    broker.mkdir(BOB, "default", "/t/sub", 0o755)
    with refused(errno.EPERM):
        broker.unlink(DAVE, "default", "/t/x")
    with refused(errno.EPERM):
        broker.rmdir(DAVE, "default", "/t/sub")
    broker.rename(ALICE, "default", "/t/x", "", "/t/y")
    broker.unlink(ALICE, "default", "/t/y")
    broker.rmdir(ALICE, "default", "/t/sub")


def test_without_sticky_anyone_with_write_removes(world: World) -> None:
    world.broker.mkdir(ALICE, "default", "/open", 0o777)
    world.region(BOB, "/open/x")
    world.broker.unlink(DAVE, "default", "/open/x")


def test_chmod_only_by_owner_or_root(world: World) -> None:
    broker = world.broker
    world.region(ALICE, "/r", 0o644)
    for creds in (BOB, CAROL, DAVE):
        with refused(errno.EPERM):
            broker.chmod(creds, "default", "/r", 0o666)
    assert broker.chmod(ALICE, "default", "/r", 0o600).mode == 0o600
    assert broker.chmod(ROOT, "default", "/r", 0o640).mode == 0o640
    with refused(errno.EPERM):
        broker.chmod(ALICE, "default", "/", 0o777)
    with refused(errno.ENOENT):
        broker.chmod(ALICE, "default", "/nope", 0o777)


def test_chmod_masks_and_drops_setgid_outside_the_group(world: World) -> None:
    broker = world.broker
    broker.mkdir(ALICE, "default", "/d", 0o755)
    assert broker.chmod(ALICE, "default", "/d", 0o172755).mode == 0o2755
    broker.chown(ROOT, "default", "/d", -1, 500)
    assert broker.chmod(ALICE, "default", "/d", 0o2755).mode == 0o755
    assert broker.chmod(ROOT, "default", "/d", 0o2755).mode == 0o2755


def test_chown_only_by_root(world: World) -> None:
    broker = world.broker
    world.region(ALICE, "/r")
    for creds in (ALICE, BOB, DAVE):
        with refused(errno.EPERM):
            broker.chown(creds, "default", "/r", BOB.uid, -1)
    view = broker.chown(ROOT, "default", "/r", BOB.uid, -1)
    assert (view.uid, view.gid) == (BOB.uid, ALICE.gid)
    view = broker.chown(ROOT, "default", "/r", -1, 500)
    assert (view.uid, view.gid) == (BOB.uid, 500)
    assert broker.chown(ROOT, "default", "/r", MAX_ID, MAX_ID).uid == MAX_ID
    for uid, gid in ((-2, -1), (MAX_ID + 1, -1), (-1, -2), (-1, MAX_ID + 1)):
        with refused(errno.EINVAL):
            broker.chown(ROOT, "default", "/r", uid, gid)
    broker.chown(ROOT, "default", "/r", BOB.uid, STAFF)
    assert broker.chmod(BOB, "default", "/r", 0o600).uid == BOB.uid
    with refused(errno.EPERM):
        broker.chmod(ALICE, "default", "/r", 0o666)


def test_setgid_directory_passes_its_group_on(world: World) -> None:
    broker = world.broker
    broker.mkdir(ROOT, "default", "/proj", 0o2777)
    broker.chown(ROOT, "default", "/proj", -1, 500)
    sub = broker.mkdir(ALICE, "default", "/proj/sub", 0o755)
    assert sub.gid == 500 and sub.mode == 0o2755
    deeper = broker.mkdir(ALICE, "default", "/proj/sub/deeper", 0o700)
    assert deeper.gid == 500 and deeper.mode & stat.S_ISGID
    region = world.region(ALICE, "/proj/r", 0o640)
    assert region.gid == 500 and region.mode == 0o640
    broker.mkdir(ROOT, "default", "/plain", 0o777)
    plain = broker.mkdir(ALICE, "default", "/plain/sub", 0o755)
    assert plain.gid == ALICE.gid and not plain.mode & stat.S_ISGID
    assert world.region(ALICE, "/plain/r").gid == ALICE.gid


# -- rename ----------------------------------------------------------------------------------


def test_rename_within_a_directory(world: World) -> None:
    broker = world.broker
    before = world.region(ALICE, "/a")
    after = broker.rename(ALICE, "default", "/a", "", "/b")
    assert (after.id, after.path, after.start) == (before.id, "/b", before.start)
    with refused(errno.ENOENT):
        broker.stat(ALICE, "default", "/a")
    assert world.names(ALICE, "/") == ["b"]


def test_rename_across_directories_moves_the_subtree(world: World) -> None:
    broker = world.broker
    broker.mkdir(ALICE, "default", "/src", 0o755)
    broker.mkdir(ALICE, "default", "/src/tree", 0o755)
    broker.mkdir(ALICE, "default", "/dst", 0o755)
    region = world.region(ALICE, "/src/tree/r")
    broker.rename(ALICE, "default", "/src/tree", "default", "/dst/moved")
    assert broker.stat(ALICE, "default", "/dst/moved/r").id == region.id
    assert world.names(ALICE, "/src") == []
    moved = broker.rename(ALICE, "default", "/dst/moved/r", "", "/r")
    assert moved.path == "/r" and world.names(ALICE, "/") == ["dst", "r", "src"]


def test_rename_over_an_unattached_region_frees_it(world: World) -> None:
    broker = world.broker
    source = world.region(ALICE, "/a")
    target = world.region(ALICE, "/b")
    view = broker.rename(ALICE, "default", "/a", "", "/b")
    assert view.id == source.id and broker.stat(ALICE, "default", "/b").id == source.id
    assert world.backings.made[target.id].closes == 1
    assert broker.freed_total["default"] == 1 and broker.region_count() == 1
    assert world.names(ALICE, "/") == ["b"]


def test_rename_over_an_attached_region_unlinks_it(world: World) -> None:
    broker = world.broker
    world.region(ALICE, "/a")
    target = world.region(ALICE, "/b")
    session = world.session(BOB)
    handoff = broker.attach(session, "default", "/b", 0, Access.READ_ONLY)
    broker.rename(ALICE, "default", "/a", "", "/b")
    replaced = {view.id: view for view in broker.regions_snapshot()}[target.id]
    assert replaced.state is State.UNLINKED and replaced.path == "" and replaced.attach_count == 1
    with refused(errno.ENOENT):
        broker.attach(world.session(ALICE), "default", "", target.id, Access.READ_ONLY)
    assert world.backings.made[target.id].closes == 0
    broker.detach(session, [handoff.attachment_id])
    assert world.backings.made[target.id].closes == 1 and broker.region_count() == 1


def test_rename_onto_directories(world: World) -> None:
    broker = world.broker
    for path in ("/d", "/empty", "/full", "/full/x"):
        broker.mkdir(ALICE, "default", path, 0o755)
    world.region(ALICE, "/r")
    with refused(errno.ENOTEMPTY):
        broker.rename(ALICE, "default", "/d", "", "/full")
    with refused(errno.ENOTDIR):
        broker.rename(ALICE, "default", "/d", "", "/r")
    with refused(errno.EISDIR):
        broker.rename(ALICE, "default", "/r", "", "/empty")
    d_id = broker.stat(ALICE, "default", "/d").id
    assert broker.rename(ALICE, "default", "/d", "", "/empty").id == d_id
    assert world.names(ALICE, "/") == ["empty", "full", "r"]


def test_rename_onto_an_ancestor_is_enotempty(world: World) -> None:
    world.broker.mkdir(ALICE, "default", "/a", 0o755)
    world.broker.mkdir(ALICE, "default", "/a/b", 0o755)
    with refused(errno.ENOTEMPTY):
        world.broker.rename(ALICE, "default", "/a/b", "", "/a")


@pytest.mark.parametrize("dst", ["/a/x", "/a/b/x", "/a/b/c/x"])
def test_rename_a_directory_into_its_own_subtree_is_einval(world: World, dst: str) -> None:
    for path in ("/a", "/a/b", "/a/b/c"):
        world.broker.mkdir(ALICE, "default", path, 0o755)
    with refused(errno.EINVAL):
        world.broker.rename(ALICE, "default", "/a", "", dst)
    assert world.broker.stat(ALICE, "default", "/a/b/c").path == "/a/b/c"


def test_rename_across_namespaces_is_exdev() -> None:
    world = make_world("other")
    world.region(ALICE, "/r")
    with refused(errno.EXDEV):
        world.broker.rename(ALICE, "default", "/r", "other", "/r")
    with refused(errno.ENOENT):
        world.broker.rename(ALICE, "default", "/r", "missing", "/r")
    assert world.broker.stat(ALICE, "default", "/r").path == "/r"
    assert world.names(ALICE, "/", "other") == []


def test_rename_to_itself_is_a_noop(world: World) -> None:
    broker = world.broker
    region = world.region(ALICE, "/r")
    broker.mkdir(ALICE, "default", "/d", 0o755)
    world.attach(ALICE, "/r")
    assert broker.rename(ALICE, "default", "/r", "", "//r").id == region.id
    assert broker.rename(ALICE, "default", "/d", "", "/d").path == "/d"
    view = broker.stat(ALICE, "default", "/r")
    assert view.state is State.ACTIVE and view.attach_count == 1
    assert world.backings.made[region.id].closes == 0 and broker.freed_total["default"] == 0


def test_rename_refusals(world: World) -> None:
    broker = world.broker
    world.region(ALICE, "/r")
    with refused(errno.EBUSY):
        broker.rename(ROOT, "default", "/", "", "/x")
    with refused(errno.EBUSY):
        broker.rename(ROOT, "default", "/r", "", "/")
    with refused(errno.ENOENT):
        broker.rename(ALICE, "default", "/nope", "", "/x")
    with refused(errno.ENOENT):
        broker.rename(ALICE, "default", "/r", "", "/nope/x")
    with refused(errno.EINVAL):
        broker.rename(ALICE, "default", "/r", "", "x")


def test_moving_a_directory_to_another_parent_needs_write_on_it(world: World) -> None:
    broker = world.broker
    broker.mkdir(ALICE, "default", "/d1", 0o777)
    broker.mkdir(ALICE, "default", "/d2", 0o777)
    broker.mkdir(BOB, "default", "/d1/sub", 0o555)
    with refused(errno.EACCES):
        broker.rename(BOB, "default", "/d1/sub", "", "/d2/sub")
    broker.rename(BOB, "default", "/d1/sub", "", "/d1/renamed")
    broker.chmod(BOB, "default", "/d1/renamed", 0o755)
    broker.rename(BOB, "default", "/d1/renamed", "", "/d2/sub")


# -- listdir -------------------------------------------------------------------------------


def _page_names(views: list[EntryView]) -> list[str]:
    return [view.path.rsplit("/", 1)[-1] for view in views]


def test_listdir_pages_in_name_order(world: World) -> None:
    broker = world.broker
    names = ["b", "a", "Z", "é", "c1", "c10", "c2"]
    for name in names:
        broker.mkdir(ALICE, "default", "/" + name, 0o755)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        views, token = broker.listdir(ALICE, "default", "/", page_size=3, after=token)
        pages += 1
        assert len(views) <= 3
        seen += _page_names(views)
        if not token:
            break
    assert seen == sorted(names) and pages == 3
    views, token = broker.listdir(ALICE, "default", "/", page_size=7)
    assert len(views) == 7 and token == ""
    views, token = broker.listdir(ALICE, "default", "/", page_size=6)
    assert token == sorted(names)[5]
    assert all(view.is_directory for view in views)


def test_listdir_page_size_defaults_and_limits(world: World) -> None:
    broker = world.broker
    with refused(errno.EINVAL):
        broker.listdir(ALICE, "default", "/", page_size=-1)
    assert broker.listdir(ALICE, "default", "/") == ([], "")
    broker.mkdir(ROOT, "default", "/many", 0o755)
    for i in range(MAX_PAGE_SIZE + 1):
        broker.mkdir(ROOT, "default", f"/many/{i:05d}", 0o755)
    views, token = broker.listdir(ALICE, "default", "/many", page_size=MAX_PAGE_SIZE * 10)
    assert len(views) == MAX_PAGE_SIZE and token == f"{MAX_PAGE_SIZE - 1:05d}"
    views, token = broker.listdir(ALICE, "default", "/many", after=token)
    assert _page_names(views) == [f"{MAX_PAGE_SIZE:05d}"] and token == ""


def test_listdir_sees_every_change(world: World) -> None:
    broker = world.broker
    world.region(ALICE, "/m")
    assert world.names(ALICE, "/") == ["m"]
    world.region(ALICE, "/a")
    assert world.names(ALICE, "/") == ["a", "m"]
    broker.mkdir(ALICE, "default", "/z", 0o755)
    assert world.names(ALICE, "/") == ["a", "m", "z"]
    broker.rename(ALICE, "default", "/a", "", "/y")
    assert world.names(ALICE, "/") == ["m", "y", "z"]
    broker.rename(ALICE, "default", "/y", "", "/z/y")
    assert world.names(ALICE, "/") == ["m", "z"] and world.names(ALICE, "/z") == ["y"]
    broker.unlink(ALICE, "default", "/m")
    assert world.names(ALICE, "/") == ["z"]
    broker.unlink(ALICE, "default", "/z/y")
    broker.rmdir(ALICE, "default", "/z")
    assert world.names(ALICE, "/") == []


def test_listdir_token_survives_removal_of_its_name(world: World) -> None:
    broker = world.broker
    for name in "abcde":
        world.region(ALICE, "/" + name)
    views, token = broker.listdir(ALICE, "default", "/", page_size=2)
    assert _page_names(views) == ["a", "b"] and token == "b"
    broker.unlink(ALICE, "default", "/b")
    world.region(ALICE, "/bb")
    views, token = broker.listdir(ALICE, "default", "/", page_size=2, after=token)
    assert _page_names(views) == ["bb", "c"] and token == "c"


def test_listdir_refusals(world: World) -> None:
    world.broker.mkdir(ALICE, "default", "/private", 0o700)
    world.region(ALICE, "/r")
    with refused(errno.EACCES):
        world.broker.listdir(BOB, "default", "/private")
    with refused(errno.ENOTDIR):
        world.broker.listdir(ALICE, "default", "/r")
    with refused(errno.ENOENT):
        world.broker.listdir(ALICE, "default", "/nope")


# -- name resolution details where Linux and a naive lookup differ ----------------------------


def test_an_existing_name_is_eexist_even_without_write_permission(world: World) -> None:
    world.broker.mkdir(ALICE, "default", "/d", 0o755)
    world.broker.mkdir(ALICE, "default", "/d/x", 0o755)
    world.region(ALICE, "/d/r")
    for path in ("/d/x", "/d/r"):
        with refused(errno.EEXIST):
            world.broker.mkdir(BOB, "default", path, 0o755)
        with refused(errno.EEXIST):
            world.region(BOB, path)
    with refused(errno.EACCES):
        world.broker.mkdir(BOB, "default", "/d/new", 0o755)
    with refused(errno.EACCES):
        world.region(BOB, "/d/new")


def test_a_trailing_slash_needs_a_directory(world: World) -> None:
    broker = world.broker
    world.region(ALICE, "/r")
    broker.mkdir(ALICE, "default", "/d", 0o755)
    attempts: list[Callable[[], object]] = [
        lambda: broker.stat(ALICE, "default", "/r/"),
        lambda: broker.stat(ALICE, "default", "/r//"),
        lambda: world.attach(ALICE, "/r/"),
        lambda: broker.chmod(ALICE, "default", "/r/", 0o600),
        lambda: broker.unlink(ALICE, "default", "/r/"),
        lambda: broker.rename(ALICE, "default", "/r/", "", "/s"),
        lambda: broker.rename(ALICE, "default", "/r", "", "/s/"),
        lambda: broker.rename(ALICE, "default", "/r", "", "/r/"),
        lambda: broker.rename(ALICE, "default", "/d", "", "/r/"),
    ]
    for attempt in attempts:
        with refused(errno.ENOTDIR):
            attempt()
    with refused(errno.EISDIR):
        world.region(ALICE, "/new/")
    with refused(errno.ENOENT):
        broker.stat(ALICE, "default", "/new")
    assert broker.stat(ALICE, "default", "/d/").path == "/d"
    assert broker.mkdir(ALICE, "default", "/e/", 0o755).path == "/e"
    assert broker.rename(ALICE, "default", "/d/", "", "/f/").path == "/f"
    assert world.names(ALICE, "/f/") == []
    broker.rmdir(ALICE, "default", "/f/")
    assert broker.stat(ALICE, "default", "/r").path == "/r"
