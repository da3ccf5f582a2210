"""The SDK against a real broker, within one process: regions, mappings, the tree, misuse."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import threading
from pathlib import Path

import pytest

import mshare
from mshare import _fixedmap

from .conftest import BrokerProcess, make_run_dir, wait_for

MiB = 1 << 20


def probe_reserved(start: int, size: int) -> bool:
    """True when [start, start+size) is mapped in this process (MAP_FIXED_NOREPLACE refuses it)."""
    try:
        _fixedmap.reserve(start, size)
    except OSError as exc:
        assert exc.errno == errno.EADDRINUSE, exc
        return True
    _fixedmap.unmap(start, size, back_to_reservation=False)
    return False


def test_create_write_open_read(ns: mshare.Namespace) -> None:
    align = ns.info().alignment
    with ns.create("/shareme", size=2 * align, mode=0o600) as r:
        r.buf[:23] = b"Some random shared text"
        assert r.start % align == 0 and r.size == 2 * align
        assert (r.path, r.readonly, r.buf.format, r.buf.readonly) == ("/shareme", False, "B", False)
        with ns.open("/shareme", readonly=True) as ro:
            assert ro.start == r.start and ro.id == r.id
            assert bytes(ro.buf[:23]) == b"Some random shared text"
            assert ro.buf.readonly
            with pytest.raises(TypeError):
                ro.buf[0] = 1


def test_info_reports_alignment_and_arena(ns: mshare.Namespace) -> None:
    info = ns.info()
    assert info.alignment == 2 * MiB
    assert info.arena_size > 0 and info.arena_start % (1 << 30) == 0
    assert "4k" in info.page_sizes
    assert info.namespace == "default"
    assert info.region_capacity > 100


def test_stat_of_region_and_directory(ns: mshare.Namespace) -> None:
    ns.mkdir("/db", 0o750)
    with ns.create("/db/sga", size=4 * MiB, mode=0o640) as r:
        st = ns.stat("/db/sga")
        assert (st.id, st.path, st.kind, st.start, st.size) == (r.id, "/db/sga", "region", r.start, 4 * MiB)
        assert (st.mode, st.uid, st.gid, st.page_size, st.attach_count, st.state) == (
            0o640,
            os.getuid(),
            os.getgid(),
            "4k",
            1,
            "ACTIVE",
        )
        assert st.filemode == "-rw-r-----"
    d = ns.stat("/db")
    assert (d.kind, d.mode, d.path) == ("directory", 0o750, "/db")
    root = ns.stat("/")
    assert root.mode == 0o1777 and root.filemode == "drwxrwxrwt"


def test_listdir_sorted_and_paged(ns: mshare.Namespace) -> None:
    ns.mkdir("/many")
    names = [f"r{i:04d}" for i in range(2500)]
    for name in reversed(names[:30]):
        ns.mkdir(f"/many/{name}")
    assert ns.listdir("/many") == names[:30]
    for name in names[30:]:
        ns.mkdir(f"/many/{name}")
    assert ns.listdir("/many") == names  # more than two pages of 1000


def test_attach_count_follows_close_without_waiting(ns: mshare.Namespace) -> None:
    region = ns.create("/counted", size=2 * MiB)
    others = [ns.open("/counted") for _ in range(3)]
    assert ns.stat("/counted").attach_count == 4
    for other in others:
        other.close()
    assert ns.stat("/counted").attach_count == 1  # detach is one-way, yet every later call observes it
    region.close()
    assert ns.stat("/counted").attach_count == 0


def test_a_repeated_open_sees_every_change_to_the_name(ns: mshare.Namespace) -> None:
    """The same open again travels without a parse; the broker still resolves the name each time."""
    align = ns.info().alignment
    ns.allocate("/again", size=align)
    first = []
    for _ in range(3):
        with ns.open("/again") as region:
            first.append(region.id)
    ns.rename("/again", "/moved")
    with pytest.raises(FileNotFoundError):
        ns.open("/again")
    ns.allocate("/again", size=2 * align)
    with ns.open("/again") as region:
        assert (region.size, region.id != first[0]) == (2 * align, True)
    ns.unlink("/again")
    with pytest.raises(FileNotFoundError):
        ns.open("/again")
    with ns.open("/moved") as region:
        assert region.id == first[0] and len(set(first)) == 1


def test_close_with_live_view_raises_and_changes_nothing(ns: mshare.Namespace) -> None:
    region = ns.create("/views", size=2 * MiB)
    view = region.buf[10:20]
    with pytest.raises(BufferError):
        region.close()
    assert not region.closed
    view[0] = 42
    assert region.buf[10] == 42
    del view
    region.close()
    assert region.closed
    region.close()  # idempotent
    with pytest.raises(ValueError):
        _ = region.buf


def test_close_refused_while_ndarray_alive(ns: mshare.Namespace) -> None:
    numpy = pytest.importorskip("numpy")
    region = ns.create("/array", size=2 * MiB)
    array = region.ndarray(numpy.uint64, (16,), offset=64)
    array[:] = numpy.arange(16)
    assert int.from_bytes(region.buf[64 + 8 : 64 + 16], "little") == 1
    with pytest.raises(BufferError):
        region.close()
    del array
    with ns.open("/array", readonly=True) as ro:
        view = ro.ndarray(numpy.uint64, (16,), offset=64)
        assert not view.flags.writeable and view[15] == 15
        del view
    region.close()


def test_closed_range_stays_reserved(ns: mshare.Namespace) -> None:
    region = ns.create("/reserved", size=4 * MiB)
    start, size = region.start, region.size
    assert probe_reserved(start, size)
    region.close()
    assert probe_reserved(start, size)  # PROT_NONE reservation back in place, no hole


def test_double_open_shares_one_mapping(ns: mshare.Namespace) -> None:
    first = ns.create("/shared", size=2 * MiB)
    second = ns.open("/shared")
    assert second.start == first.start
    maps = Path("/proc/self/maps").read_text()
    assert sum(1 for line in maps.splitlines() if line.startswith(f"{first.start:x}-")) == 1
    first.buf[0] = 9
    first.close()
    assert second.buf[0] == 9  # the mapping outlives the first handle
    second.close()
    assert ns.stat("/shared").attach_count == 0


def test_read_write_open_of_read_only_mapping_is_ebusy(ns: mshare.Namespace) -> None:
    ns.create("/ro", size=2 * MiB).close()
    ro = ns.open("/ro", readonly=True)
    with pytest.raises(OSError) as caught:
        ns.open("/ro")
    assert caught.value.errno == errno.EBUSY and caught.value.filename == "/ro"
    assert ns.stat("/ro").attach_count == 1  # the refused attachment was given back
    ro.close()
    ns.open("/ro").close()


def test_pointer_inside_region_is_valid_at_the_same_address(ns: mshare.Namespace) -> None:
    region = ns.create("/pointers", size=2 * MiB)
    target = region.start + 4096
    ctypes.c_uint64.from_address(region.start).value = target
    ctypes.memmove(target, b"pointed-to", 10)
    with ns.open("/pointers", readonly=True) as again:
        address = ctypes.c_uint64.from_address(again.start).value
        assert ctypes.string_at(address, 10) == b"pointed-to"
    region.close()


def test_named_start_inside_and_outside_the_arena(ns: mshare.Namespace) -> None:
    info = ns.info()
    inside = info.arena_start + info.arena_size - 64 * MiB
    with ns.create("/inside", size=2 * MiB, start=inside) as region:
        assert region.start == inside
    outside = info.arena_start - (1 << 30)
    with ns.create("/outside", size=2 * MiB, start=outside) as region:
        assert region.start == outside
        region.buf[0] = 1
    assert not probe_reserved(outside, 2 * MiB)  # outside the arena close() unmaps


def test_named_start_in_use_in_this_process_is_a_clear_error(ns: mshare.Namespace) -> None:
    info = ns.info()
    start = info.arena_start - (2 << 30)
    _fixedmap.reserve(start, 2 * MiB)  # something else of this process lives there
    try:
        with pytest.raises(OSError) as caught:
            ns.create("/blocked", size=2 * MiB, start=start)
        assert caught.value.errno == errno.EADDRINUSE
        assert f"{start:#x}" in str(caught.value)
        assert ns.stat("/blocked").attach_count == 0  # the attachment was given back
    finally:
        _fixedmap.unmap(start, 2 * MiB, back_to_reservation=False)


def test_memfd_rules(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    with ns.create("/sealed", size=2 * MiB, mode=0o644) as rw, ns.open("/sealed", readonly=True) as ro:
        st = os.fstat(rw.fileno())
        assert stat.S_IMODE(st.st_mode) == 0o600  # whatever the region's mode
        assert st.st_uid == os.stat(f"/proc/{broker.pid}").st_uid
        assert st.st_size == 2 * MiB
        seals = fcntl.fcntl(rw.fileno(), fcntl.F_GET_SEALS)
        assert seals & (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL) == (
            fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        )
        assert fcntl.fcntl(rw.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert fcntl.fcntl(rw.fileno(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
        with pytest.raises(OSError) as grow:
            os.ftruncate(rw.fileno(), 4 * MiB)
        assert grow.value.errno == errno.EPERM
        assert ro.fileno() == rw.fileno()  # one mapping, one memfd per process


def test_read_only_attachment_gets_read_only_description(broker: BrokerProcess) -> None:
    with broker.connect() as creator:
        creator.create("/rodesc", size=2 * MiB).close()
    with broker.connect() as ns, ns.open("/rodesc", readonly=True) as ro:
        assert fcntl.fcntl(ro.fileno(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY


def test_two_connects_in_one_process(broker: BrokerProcess) -> None:
    with broker.connect() as a, broker.connect() as b:
        assert a.session_id != b.session_id
        region = a.create("/both", size=2 * MiB)
        region.buf[:2] = b"ok"
        with b.open("/both") as other:
            assert other.start == region.start and bytes(other.buf[:2]) == b"ok"
        region.close()
        assert {s.id for s in a.sessions()} >= {a.session_id, b.session_id}


def test_namespace_close_closes_its_regions(broker: BrokerProcess) -> None:
    ns = broker.connect()
    region = ns.create("/closing", size=2 * MiB)
    ns.close()
    assert region.closed and ns.closed
    ns.close()
    with broker.connect() as other:
        assert other.stat("/closing").attach_count == 0
    with pytest.raises(ValueError):
        ns.stat("/closing")


def test_threads_share_one_session(ns: mshare.Namespace) -> None:
    for i in range(8):
        ns.create(f"/t{i}", size=2 * MiB).close()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(50):
                with ns.open(f"/t{i}") as region:
                    region.buf[0] = i
                assert ns.stat(f"/t{i}").kind == "region"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(ns.stat(f"/t{i}").attach_count == 0 for i in range(8))


def test_a_range_freed_by_a_close_is_reused_safely_by_another_thread(ns: mshare.Namespace) -> None:
    """close() tells the broker before it unmaps; the broker may place a new region in the
    freed range at once, and another thread of the process must still map it cleanly."""
    errors: list[BaseException] = []

    def closer() -> None:
        try:
            for i in range(300):
                region = ns.create(f"/gone{i}", size=2 * MiB)
                ns.unlink(region.path)  # freed by the close below: its range goes back at once
                region.close()
        except BaseException as exc:
            errors.append(exc)

    def creator() -> None:
        try:
            for i in range(300):
                with ns.create(f"/new{i}", size=2 * MiB) as region:
                    region.buf[0] = i % 256
                    region.buf[-1] = i % 256
                    assert (region.buf[0], region.buf[-1]) == (i % 256, i % 256)
                ns.unlink(f"/new{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=closer), threading.Thread(target=creator)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert ns.listdir("/") == []


def test_forked_child_gets_a_clear_error(ns: mshare.Namespace) -> None:
    region = ns.create("/forked", size=2 * MiB)
    region.buf[0] = 5
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            ns.stat("/forked")
            result = b"no error"
        except mshare.ForkedError as exc:
            result = b"ok " + str(exc).encode() if b"connect()" in str(exc).encode() else b"unclear " + str(exc).encode()
        except BaseException as exc:
            result = repr(exc).encode()
        os.write(write_end, result)
        os._exit(0)
    os.close(write_end)
    result = os.read(read_end, 4096)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert result.startswith(b"ok "), result
    assert ns.stat("/forked").attach_count == 1  # the child's exit changed nothing
    region.close()


def test_a_forked_child_does_not_keep_the_session_alive(broker: BrokerProcess) -> None:
    ns = broker.connect()
    session_id = ns.session_id
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_end)
        os.read(read_end, 1)  # lives on until the parent is done checking
        os._exit(0)
    os.close(read_end)
    try:
        ns.close()
        with broker.connect() as other:
            assert wait_for(lambda: session_id not in {s.id for s in other.sessions()}, timeout=2.0)
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)


@pytest.mark.parametrize(
    ("call", "exception"),
    [
        (lambda ns: ns.create("relative", size=2 * MiB), ValueError),
        (lambda ns: ns.create("", size=2 * MiB), ValueError),
        (lambda ns: ns.create("/nul\0", size=2 * MiB), ValueError),
        (lambda ns: ns.create(b"/bytes", size=2 * MiB), TypeError),
        (lambda ns: ns.create("/x", size=0), ValueError),
        (lambda ns: ns.create("/x", size=-2 * MiB), ValueError),
        (lambda ns: ns.create("/x", size="2M"), TypeError),
        (lambda ns: ns.create("/x", size=2.0 * MiB), TypeError),
        (lambda ns: ns.create("/x", size=2 * MiB, mode="0600"), TypeError),
        (lambda ns: ns.create("/x", size=2 * MiB, page_size="8k"), ValueError),
        (lambda ns: ns.open(None), TypeError),
        (lambda ns: ns.stat("no/slash"), ValueError),
        (lambda ns: ns.mkdir("/d", mode=0o70000), ValueError),
    ],
)
def test_mistakes_raise_before_any_call(ns: mshare.Namespace, call, exception) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exception):
        call(ns)
    assert ns.listdir("/") == []


def test_unreachable_broker_names_the_socket() -> None:
    empty = make_run_dir()
    try:
        with pytest.raises(ConnectionError) as caught:
            mshare.connect(run_dir=empty)
        assert isinstance(caught.value, mshare.BrokerUnavailableError)
        assert str(empty / "session.sock") in str(caught.value)
    finally:
        empty.rmdir()


def test_run_dir_writable_by_others_is_refused(broker: BrokerProcess) -> None:
    broker.run_dir.chmod(0o777)
    try:
        with pytest.raises(mshare.BrokerUnavailableError) as caught:
            broker.connect()
        assert "writable by others" in str(caught.value)
    finally:
        broker.run_dir.chmod(0o755)


def test_run_dir_from_environment(broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSHARE_RUN_DIR", str(broker.run_dir))
    with mshare.connect() as ns:
        assert ns.info().namespace == "default"


def test_broker_exit_keeps_mappings_and_reports_lost_session(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker()
    ns = broker.connect()
    region = ns.create("/survivor", size=2 * MiB)
    region.buf[:4] = b"kept"
    broker.stop()
    assert bytes(region.buf[:4]) == b"kept"
    region.buf[4] = 1
    with pytest.raises(ConnectionError):
        ns.open("/survivor")
    region.close()
    ns.close()
