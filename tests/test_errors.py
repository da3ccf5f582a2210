"""Every row of the errno table, through the SDK and as a raw gRPC status, against a real broker."""

from __future__ import annotations

import errno
import json
import os
import resource
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import mshare
from mshare.errors import CODE_NUMBERS, ERRNO_CODES
from mshare.v1 import broker_service_pb2 as pb
from mshare.v1 import broker_service_pb2_grpc

from .conftest import BrokerProcess, as_user, python_child

MiB = 1 << 20
GiB = 1 << 30

#: A config with a second namespace (for EXDEV) and a 1 GiB arena (for ENOMEM).
CONFIG = """
[arena]
size = "1G"

[namespaces.other]
alignment = "4M"
"""


@pytest.fixture
def configured(start_broker: Callable[..., BrokerProcess], run_dir: Path) -> BrokerProcess:
    config = run_dir.parent / f"{run_dir.name}.toml"
    config.write_text(CONFIG)
    return start_broker("--config", str(config))


def expect(errno_value: int, exception: type[OSError], call: Callable[[], object], path: str | None = None) -> OSError:
    with pytest.raises(OSError) as caught:
        call()
    error = caught.value
    assert error.errno == errno_value, f"{errno.errorcode[error.errno or 0]} != {errno.errorcode[errno_value]}: {error}"
    assert type(error) is exception
    if path is not None:
        assert error.filename == path
    return error


def test_table_covers_spec_errnos() -> None:
    spec = {
        "EEXIST",
        "ENOENT",
        "EACCES",
        "EPERM",
        "EINVAL",
        "ENOTEMPTY",
        "ENOTDIR",
        "EISDIR",
        "EADDRINUSE",
        "EXDEV",
        "EBUSY",
        "ENAMETOOLONG",
        "ENOMEM",
        "EMFILE",
        "ENOSPC",
        "EDQUOT",
    }
    assert spec <= {errno.errorcode[e] for e in ERRNO_CODES}


def test_eexist(ns: mshare.Namespace) -> None:
    ns.mkdir("/d")
    expect(errno.EEXIST, FileExistsError, lambda: ns.mkdir("/d"), "/d")
    ns.create("/r", size=2 * MiB).close()
    expect(errno.EEXIST, FileExistsError, lambda: ns.create("/r", size=2 * MiB), "/r")
    expect(errno.EEXIST, FileExistsError, lambda: ns.create("/d", size=2 * MiB), "/d")


def test_enoent(ns: mshare.Namespace) -> None:
    expect(errno.ENOENT, FileNotFoundError, lambda: ns.open("/missing"), "/missing")
    expect(errno.ENOENT, FileNotFoundError, lambda: ns.stat("/missing"), "/missing")
    expect(errno.ENOENT, FileNotFoundError, lambda: ns.create("/no/parent", size=2 * MiB), "/no/parent")
    expect(errno.ENOENT, FileNotFoundError, lambda: ns.unlink("/missing"), "/missing")


def test_enoent_for_unknown_namespace(broker: BrokerProcess) -> None:
    expect(errno.ENOENT, FileNotFoundError, lambda: broker.connect("nosuch"))


def test_einval(ns: mshare.Namespace) -> None:
    align = ns.info().alignment
    expect(errno.EINVAL, OSError, lambda: ns.create("/odd", size=align + 4096), "/odd")
    start = ns.info().arena_start + 64 * align
    expect(errno.EINVAL, OSError, lambda: ns.create("/odd", size=align, start=start + 4096), "/odd")
    expect(errno.EINVAL, OSError, lambda: ns.stat("/a/../b"))
    ns.mkdir("/d")
    expect(errno.EINVAL, OSError, lambda: ns.rename("/d", "/d/inner"))


def test_einval_is_checked_before_eaddrinuse(ns: mshare.Namespace) -> None:
    with ns.create("/taken", size=4 * MiB) as region:
        expect(errno.EINVAL, OSError, lambda: ns.create("/x", size=3 * MiB, start=region.start))
        expect(errno.EADDRINUSE, OSError, lambda: ns.create("/x", size=2 * MiB, start=region.start + 2 * MiB), "/x")


def test_eaddrinuse_counts_unlinked_but_attached_regions(ns: mshare.Namespace) -> None:
    region = ns.create("/old", size=2 * MiB)
    ns.unlink("/old")
    expect(errno.EADDRINUSE, OSError, lambda: ns.create("/new", size=2 * MiB, start=region.start), "/new")
    start = region.start
    region.close()
    with ns.create("/new", size=2 * MiB, start=start) as reused:
        assert reused.start == start


def test_enotempty_enotdir_eisdir(ns: mshare.Namespace) -> None:
    ns.mkdir("/full")
    ns.create("/full/r", size=2 * MiB).close()
    expect(errno.ENOTEMPTY, OSError, lambda: ns.rmdir("/full"), "/full")
    expect(errno.ENOTDIR, NotADirectoryError, lambda: ns.rmdir("/full/r"), "/full/r")
    expect(errno.ENOTDIR, NotADirectoryError, lambda: ns.stat("/full/r/deeper"), "/full/r/deeper")
    expect(errno.ENOTDIR, NotADirectoryError, lambda: ns.listdir("/full/r"), "/full/r")
    expect(errno.EISDIR, IsADirectoryError, lambda: ns.unlink("/full"), "/full")
    expect(errno.EISDIR, IsADirectoryError, lambda: ns.open("/full"), "/full")


def test_ebusy(ns: mshare.Namespace) -> None:
    expect(errno.EBUSY, OSError, lambda: ns.rmdir("/"), "/")
    ns.create("/mapped", size=2 * MiB).close()
    with ns.open("/mapped", readonly=True):
        expect(errno.EBUSY, OSError, lambda: ns.open("/mapped"), "/mapped")


def test_enametoolong(ns: mshare.Namespace) -> None:
    expect(errno.ENAMETOOLONG, OSError, lambda: ns.mkdir("/" + "n" * 256))
    ns.mkdir("/" + "n" * 255)
    expect(errno.ENAMETOOLONG, OSError, lambda: ns.stat("/" + "/".join(["d" * 200] * 21)))
    expect(errno.ENAMETOOLONG, OSError, lambda: ns.mkdir("/" + "é" * 128))  # 256 bytes in UTF-8


def test_exdev(configured: BrokerProcess) -> None:
    with configured.connect() as ns, configured.connect("other") as other:
        assert other.info().alignment == 4 * MiB
        ns.create("/r", size=2 * MiB).close()
        expect(errno.EXDEV, OSError, lambda: ns.rename("/r", "/r", dst_namespace="other"), "/r")
        expect(errno.EXDEV, OSError, lambda: ns.rename("/r", "other:/r"), "/r")
        expect(errno.ENOENT, FileNotFoundError, lambda: ns.rename("/r", "nosuch:/r"))
        assert ns.stat("/r").kind == "region"
        expect(errno.ENOENT, FileNotFoundError, lambda: other.stat("/r"))


def test_enomem_when_the_arena_is_full(configured: BrokerProcess) -> None:
    with configured.connect() as ns:
        assert ns.info().arena_size == GiB
        error = expect(errno.ENOMEM, OSError, lambda: ns.create("/huge", size=2 * GiB), "/huge")
        assert "arena" in str(error)
        regions = [ns.create(f"/fill{i}", size=256 * MiB) for i in range(4)]
        expect(errno.ENOMEM, OSError, lambda: ns.create("/one-more", size=2 * MiB))
        regions.pop().close()
        ns.unlink("/fill3")
        ns.create("/one-more", size=2 * MiB).close()  # freed range reused
        for region in regions:
            region.close()


def test_a_create_observes_the_close_just_before_it(configured: BrokerProcess) -> None:
    """Closing the last attachment of an unlinked region frees its range, and the
    very next create may need that range: the arena has room for four regions."""
    with configured.connect() as ns:
        regions = [ns.create(f"/fill{i}", size=256 * MiB) for i in range(4)]
        for i in range(20):
            victim = regions.pop(0)
            ns.unlink(victim.path)  # lives on while attached, holding its range
            victim.close()
            regions.append(ns.create(f"/again{i}", size=256 * MiB))  # takes the range the close freed
        for region in regions:
            region.close()


def test_emfile_when_the_broker_runs_out_of_descriptors(start_broker: Callable[..., BrokerProcess]) -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    broker = start_broker(preexec_fn=low_limit)
    with broker.connect() as ns:
        assert ns.info().region_capacity < 64
        created = 0
        with pytest.raises(OSError) as caught:
            for created in range(100):
                ns.create(f"/r{created}", size=2 * MiB).close()
        assert caught.value.errno == errno.EMFILE, caught.value
        assert created > 5
        for i in range(created):
            ns.unlink(f"/r{i}")
        ns.create("/after", size=2 * MiB).close()  # the broker recovered
    assert broker.proc is not None and broker.proc.poll() is None


def test_an_open_observes_the_close_just_before_it(start_broker: Callable[..., BrokerProcess]) -> None:
    """Closing the last attachment of an unlinked region frees its broker descriptor,
    and the very next open may need that descriptor (a read-only reopen of a memfd)."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    broker = start_broker(preexec_fn=low_limit)
    with broker.connect() as ns:
        ns.create("/wanted", size=2 * MiB).close()
        victim = ns.create("/victim", size=2 * MiB)
        ns.unlink("/victim")  # lives on while attached, holding one broker descriptor
        with pytest.raises(OSError) as full:
            for i in range(100):
                ns.create(f"/fill{i}", size=2 * MiB).close()
        assert full.value.errno == errno.EMFILE
        for _ in range(20):
            expect(errno.EMFILE, OSError, lambda: ns.open("/wanted", readonly=True))
            victim.close()
            with ns.open("/wanted", readonly=True) as wanted:  # takes the descriptor the close freed
                assert wanted.readonly
            ns.unlink("/wanted")  # back to where we were: /wanted anew, and a victim holding the last descriptor
            ns.create("/wanted", size=2 * MiB).close()
            victim = ns.create("/victim", size=2 * MiB)
            ns.unlink("/victim")
        victim.close()


DENIED = """
ns = mshare.connect()
out = {}
for name, call in [
    ("open", lambda: ns.open("/private")),
    ("chmod", lambda: ns.chmod("/private", 0o666)),
    ("chown", lambda: ns.chown("/private", 65534, 65534)),
    ("unlink", lambda: ns.unlink("/private")),
]:
    try:
        call()
        out[name] = None
    except OSError as exc:
        out[name] = [exc.errno, type(exc).__name__, exc.filename]
print(json.dumps(out))
"""


def test_eacces_and_eperm(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    ns.create("/private", size=2 * MiB, mode=0o600).close()
    result = as_user(DENIED, broker.run_dir)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["open"] == [errno.EACCES, "PermissionError", "/private"]
    assert out["chmod"] == [errno.EPERM, "PermissionError", "/private"]
    assert out["chown"] == [errno.EPERM, "PermissionError", "/private"]
    assert out["unlink"] == [errno.EPERM, "PermissionError", "/private"]  # sticky root, not its entry


# -- the same table as raw gRPC statuses --------------------------------------------------


def raw_stub(broker: BrokerProcess) -> broker_service_pb2_grpc.BrokerServiceStub:
    channel = grpc.insecure_channel(f"unix:{broker.run_dir / 'mshare.sock'}")
    return broker_service_pb2_grpc.BrokerServiceStub(channel), channel


def status_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details and status.details[0].Unpack(info)
    assert info.domain == "mshare.v1"
    assert "Traceback" not in status.message
    return caught.value.code(), info.reason, dict(info.metadata)


def test_raw_grpc_codes(configured: BrokerProcess) -> None:
    with configured.connect() as ns:
        ns.mkdir("/dir")
        ns.create("/dir/r", size=2 * MiB).close()
        taken = ns.stat("/dir/r").start
        stub, channel = raw_stub(configured)
        meta = (("x-mshare-session", ns._token),)
        cases = {
            errno.EEXIST: lambda: stub.CreateDirectory(pb.CreateDirectoryRequest(path="/dir"), metadata=meta),
            errno.ENOENT: lambda: stub.GetEntry(pb.GetEntryRequest(path="/nope"), metadata=meta),
            errno.EINVAL: lambda: stub.CreateRegion(pb.CreateRegionRequest(path="/x", size_bytes=4096), metadata=meta),
            errno.ENOTEMPTY: lambda: stub.DeleteDirectory(pb.DeleteDirectoryRequest(path="/dir"), metadata=meta),
            errno.ENOTDIR: lambda: stub.DeleteDirectory(pb.DeleteDirectoryRequest(path="/dir/r"), metadata=meta),
            errno.EISDIR: lambda: stub.UnlinkRegion(pb.UnlinkRegionRequest(path="/dir"), metadata=meta),
            errno.EADDRINUSE: lambda: stub.CreateRegion(
                pb.CreateRegionRequest(path="/y", size_bytes=2 * MiB, start=taken), metadata=meta
            ),
            errno.EXDEV: lambda: stub.RenameEntry(
                pb.RenameEntryRequest(source_path="/dir", destination_namespace="other", destination_path="/dir"), metadata=meta
            ),
            errno.EBUSY: lambda: stub.DeleteDirectory(pb.DeleteDirectoryRequest(path="/"), metadata=meta),
            errno.ENAMETOOLONG: lambda: stub.GetEntry(pb.GetEntryRequest(path="/" + "x" * 300), metadata=meta),
            errno.ENOMEM: lambda: stub.CreateRegion(pb.CreateRegionRequest(path="/z", size_bytes=4 * GiB), metadata=meta),
        }
        try:
            for errno_value, call in cases.items():
                code, reason, metadata = status_of(call)
                assert reason == errno.errorcode[errno_value]
                assert code.value[0] == CODE_NUMBERS[ERRNO_CODES[errno_value]], (reason, code)
            _, _, metadata = status_of(cases[errno.ENOENT])
            assert metadata == {"path": "/nope"}
        finally:
            channel.close()


def test_calls_without_a_session_are_unauthenticated(broker: BrokerProcess) -> None:
    stub, channel = raw_stub(broker)
    try:
        for metadata in ((), (("x-mshare-session", "0" * 32),)):
            code, reason, _ = status_of(lambda metadata=metadata: stub.GetInfo(pb.GetInfoRequest(), metadata=metadata))
            assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "ENOTCONN")
    finally:
        channel.close()


def test_token_dies_with_its_session(broker: BrokerProcess) -> None:
    ns = broker.connect()
    token = ns._token
    ns.close()
    stub, channel = raw_stub(broker)
    try:
        code, _, _ = status_of(lambda: stub.GetInfo(pb.GetInfoRequest(), metadata=(("x-mshare-session", token),)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        channel.close()


MAP_COUNT = Path("/proc/sys/vm/max_map_count")

MAP_UNTIL_FULL = """
import errno, mshare
ns = mshare.connect()
held = []
try:
    for i in range(5000):
        held.append(ns.create(f"/m{i}", size=2 << 20))
    print("never failed")
except OSError as exc:
    print(errno.errorcode[exc.errno], len(held), exc)
"""


def test_enomem_names_vm_max_map_count(broker: BrokerProcess) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to lower vm.max_map_count for a moment")
    old = MAP_COUNT.read_text().strip()
    MAP_COUNT.write_text("1500")  # far above what the broker and pytest use, reached by the child's regions
    try:
        child = python_child(MAP_UNTIL_FULL, env={"MSHARE_RUN_DIR": str(broker.run_dir)})
        out, err = child.communicate(timeout=120)
    finally:
        MAP_COUNT.write_text(old)
    assert child.returncode == 0, err
    reason, held, message = out.split(" ", 2)
    assert reason == "ENOMEM" and int(held) > 100
    assert "vm.max_map_count allows 1500" in message
    with broker.connect() as ns:  # the broker is fine, and the child's attachments are gone with it
        assert all(ns.stat(f"/m{i}").attach_count == 0 for i in (0, int(held) - 1))
