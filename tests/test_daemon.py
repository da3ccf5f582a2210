"""The mshared process: command line, run-dir lock, sockets, health, signals, hostile input."""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import mshare
from mshare.v1 import resources_pb2, session_pb2

from .conftest import VENV_BIN, BrokerProcess, wait_for

MiB = 1 << 20


def run_mshared(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "mshared"), *args], capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})}
    )


def test_help_lists_every_option() -> None:
    out = run_mshared("--help").stdout
    for flag in (
        "--run-dir",
        "--config",
        "--metrics-address",
        "--socket-mode",
        "--socket-group",
        "--alignment",
        "--log-level",
        "--log-format",
    ):
        assert flag in out


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--alignment", "3M"], {}, "--alignment"),
        (["--alignment", "1K"], {}, "--alignment"),
        (["--socket-mode", "999"], {}, "--socket-mode"),
        (["--metrics-address", "nowhere"], {}, "--metrics-address"),
        (["--log-format", "xml"], {}, "--log-format"),
        ([], {"MSHARE_LOG_LEVEL": "loud"}, "MSHARE_LOG_LEVEL"),
        ([], {"MSHARE_ALIGNMENT": "lots"}, "MSHARE_ALIGNMENT"),
        (["--socket-group", "no-such-group-here"], {}, "--socket-group"),
        (["--no-such-flag"], {}, "--no-such-flag"),
    ],
)
def test_bad_values_exit_2_with_one_line(run_dir: Path, args: list[str], env: dict[str, str], names: str) -> None:
    result = run_mshared("--run-dir", str(run_dir), *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mshared: ") and names in lines[0], result.stderr
    assert not (run_dir / "session.sock").exists()


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("[namespaces.db]\nalignment = '3M'\n", "namespaces.db.alignment"),
        ("[namespaces.db]\ncolour = 'blue'\n", "colour"),
        ("[namespaces.db]\npage_size = '8k'\n", "namespaces.db.page_size"),
        ("[arena]\nsize = '1000'\n", "arena"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_config_file_exits_2_naming_the_key(run_dir: Path, toml: str, names: str) -> None:
    config = run_dir / "bad.toml"
    config.write_text(toml)
    result = run_mshared("--run-dir", str(run_dir), "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], result.stderr


def test_config_file_flags_and_environment_layer(start_broker: Callable[..., BrokerProcess], run_dir: Path) -> None:
    config = run_dir.parent / f"{run_dir.name}.toml"
    config.write_text('alignment = "8M"\n[namespaces.db]\nalignment = "16M"\nroot_mode = "0755"\n')
    broker = start_broker("--config", str(config), env={"MSHARE_ALIGNMENT": "4M"})
    with broker.connect() as ns, broker.connect("db") as db:
        assert ns.info().alignment == 4 * MiB  # environment beats the file
        assert db.info().alignment == 16 * MiB  # the namespace's own setting beats both
        assert db.stat("/").mode == 0o755
        assert ns.namespaces() == ["db", "default"]


def test_sockets_get_mode_and_group(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker("--socket-mode", "0660", "--socket-group", "4321")
    for name in ("session.sock", "mshare.sock"):
        st = (broker.run_dir / name).stat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 4321


def test_default_socket_mode_is_0666(broker: BrokerProcess) -> None:
    for name in ("session.sock", "mshare.sock"):
        assert stat.S_IMODE((broker.run_dir / name).stat().st_mode) == 0o666


def test_second_broker_on_the_same_run_dir_is_refused(broker: BrokerProcess) -> None:
    result = run_mshared("--run-dir", str(broker.run_dir), "--metrics-address", "127.0.0.1:0")
    assert result.returncode == 1
    assert f"another mshared (pid {broker.pid}) is serving {broker.run_dir}" in result.stderr
    with broker.connect() as ns:  # the first one's sockets were not touched
        ns.create("/still-here", size=2 * MiB).close()


def test_stale_sockets_of_a_killed_broker_do_not_block(start_broker: Callable[..., BrokerProcess], run_dir: Path) -> None:
    first = start_broker()
    first.stop(signal.SIGKILL)
    assert (run_dir / "session.sock").exists()
    second = start_broker()
    with second.connect() as ns:
        assert ns.listdir("/") == []


def test_sigterm_drains_and_removes_sockets(start_broker: Callable[..., BrokerProcess], run_dir: Path) -> None:
    broker = start_broker()
    assert broker.stop(signal.SIGTERM) == 0
    assert not (run_dir / "session.sock").exists() and not (run_dir / "mshare.sock").exists()
    assert "mshared stopped" in broker.log()
    start_broker().stop()  # the lock was released


def test_health_and_reflection_need_no_session(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(f"unix:{broker.run_dir / 'mshare.sock'}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "mshare.v1.BrokerService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for r in replies for s in r.list_services_response.service}
        assert {"mshare.v1.BrokerService", "grpc.health.v1.Health"} <= names


# -- hostile input on the session socket ----------------------------------------------------


def raw_session(broker: BrokerProcess) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(str(broker.run_dir / "session.sock"))
    sock.settimeout(5)
    return sock


def ask(sock: socket.socket, payload: bytes, fds: list[int] | None = None) -> tuple[session_pb2.SessionResponse, list[int]]:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sock.sendmsg([payload], ancillary)
    data, anc, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(16))
    received = array.array("i")
    for _, _, blob in anc:
        received.frombytes(blob)
    return session_pb2.SessionResponse.FromString(data), list(received)


def request(**body: object) -> bytes:
    message = session_pb2.SessionRequest(request_id=7)
    for field, value in body.items():
        getattr(message, field).CopyFrom(value)
    return message.SerializeToString()


def hello(version: int = 1, detach_channel: bool = False) -> bytes:
    return request(
        hello=session_pb2.HelloRequest(min_protocol_version=version, max_protocol_version=version, detach_channel=detach_channel)
    )


def detach(request_id: int, *attachment_ids: int) -> bytes:
    message = session_pb2.SessionRequest(request_id=request_id)
    message.detach.attachment_ids.extend(attachment_ids)
    return message.SerializeToString()


def test_hostile_session_input_is_refused_and_survived(broker: BrokerProcess) -> None:
    with broker.connect() as ns:
        region = ns.create("/bystander", size=2 * MiB)
        region.buf[0] = 1
        ns.stat("/")
        baseline = broker.fd_count()
        with raw_session(broker) as sock:
            reply, _ = ask(sock, b"\xff\xff\xff garbage")
            assert (reply.request_id, reply.error.reason) == (0, "EINVAL")
            reply, _ = ask(sock, request(attach=session_pb2.AttachRequest(path="/bystander", access=2)))
            assert (reply.request_id, reply.error.reason) == (7, "ENOTCONN")  # hello first
            reply, _ = ask(sock, hello(version=99))
            assert reply.error.reason == "EINVAL" and "protocol" in reply.error.message
            reply, _ = ask(sock, hello())
            assert reply.hello.token and reply.hello.identity.uid == os.getuid()
            reply, _ = ask(sock, hello())
            assert reply.error.reason == "EINVAL"
            reply, _ = ask(sock, session_pb2.SessionRequest(request_id=8).SerializeToString())
            assert reply.error.reason == "EINVAL"
            reply, _ = ask(sock, b"\0" * 200_000)
            assert reply.error.reason == "EINVAL"
            with open("/dev/null") as devnull:
                reply, _ = ask(sock, hello(), fds=[devnull.fileno(), devnull.fileno()])
            assert reply.error.reason == "EINVAL"  # the fds were closed, the request refused
            reply, _ = ask(sock, request(attach=session_pb2.AttachRequest(path="/bystander", access=42)))
            assert reply.error.reason == "EINVAL"
            reply, _ = ask(
                sock, request(create=session_pb2.CreateAndAttachRequest(path="/x", size_bytes=2 * MiB, page_policy=77))
            )
            assert reply.error.reason == "EINVAL"
            reply, fds = ask(sock, request(attach=session_pb2.AttachRequest(region_id=region.id, access=1)))
            assert reply.attach.descriptor.access == resources_pb2.ACCESS_READ_ONLY and len(fds) == 1
            for fd in fds:
                os.close(fd)
            # A detach cut short is refused; a packet whose last oneof field is an attach is an attach.
            reply, _ = ask(sock, request(detach=session_pb2.DetachRequest())[:-1] + b"\xff")
            assert (reply.request_id, reply.error.reason) == (0, "EINVAL")
            reply, fds = ask(
                sock,
                request(detach=session_pb2.DetachRequest(attachment_ids=[12345]))
                + session_pb2.SessionRequest(attach=session_pb2.AttachRequest(region_id=region.id, access=1)).SerializeToString(),
            )  # the last of a oneof's fields wins: an attach
            assert reply.attach.descriptor.region_id == region.id and len(fds) == 1
            for fd in fds:
                os.close(fd)
            sock.send(request(detach=session_pb2.DetachRequest(attachment_ids=[reply.attach.descriptor.attachment_id])))
        assert wait_for(lambda: ns.stat("/bystander").attach_count == 1)
        assert wait_for(lambda: broker.fd_count() == baseline + 1)  # + the read-only reopen, kept with the region
        assert region.buf[0] == 1
        region.close()
    assert broker.proc is not None and broker.proc.poll() is None


def test_the_detach_channel_carries_detaches_and_nothing_else(broker: BrokerProcess) -> None:
    with broker.connect() as ns:
        ns.create("/r", size=2 * MiB).close()
        with raw_session(broker) as sock:
            reply, fds = ask(sock, hello())
            assert not reply.hello.detach_channel and fds == []  # only for a client that asks
        with raw_session(broker) as sock:
            reply, fds = ask(sock, hello(detach_channel=True))
            assert reply.hello.detach_channel and len(fds) == 1
            with socket.socket(fileno=fds[0]) as channel:
                assert (channel.family, channel.type) == (socket.AF_UNIX, socket.SOCK_SEQPACKET)
                attach = request(attach=session_pb2.AttachRequest(path="/r", access=resources_pb2.ACCESS_READ_WRITE))
                ids = []
                for _ in range(3):
                    reply, fds = ask(sock, attach)
                    ids.append(reply.attach.descriptor.attachment_id)
                    for fd in fds:
                        os.close(fd)
                channel.send(detach(8, ids[0]))
                assert wait_for(lambda: ns.stat("/r").attach_count == 2)
                with open("/dev/null") as devnull:  # descriptors are closed; the detach is served
                    channel.sendmsg(
                        [detach(9, ids[1])],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [devnull.fileno()]).tobytes())],
                    )
                assert wait_for(lambda: ns.stat("/r").attach_count == 1)
                baseline = broker.fd_count()
                channel.send(attach)  # anything but a detach closes the channel, and only the channel

                def closed() -> bool:
                    try:
                        channel.send(detach(10))
                    except (BrokenPipeError, ConnectionResetError):
                        return True
                    return False

                assert wait_for(closed)
                assert wait_for(lambda: broker.fd_count() == baseline - 1)
            reply, fds = ask(sock, attach)  # the session goes on; its detaches come on the session socket now
            assert reply.attach.descriptor.region_id and len(fds) == 1
            os.close(fds[0])
            sock.send(detach(12, ids[2], reply.attach.descriptor.attachment_id))
            assert wait_for(lambda: ns.stat("/r").attach_count == 0)
        assert "other than a detach" in broker.log()


def test_the_sdk_detaches_on_the_session_socket_once_its_detach_channel_is_gone(broker: BrokerProcess) -> None:
    with broker.connect() as ns:
        region = ns.create("/fallback", size=2 * MiB)
        channel = ns._session._channel  # type: ignore[union-attr]
        assert channel is not None
        channel.send(b"\xff not a detach")  # the broker closes its end of a misused channel
        assert wait_for(lambda: "other than a detach" in broker.log())
        region.close()  # the send on the closed channel fails: the detach goes on the session socket
        assert ns.stat("/fallback").attach_count == 0
        with ns.open("/fallback") as again:  # and the session goes on
            again.buf[0] = 1
            assert ns.stat("/fallback").attach_count == 1
        assert ns.stat("/fallback").attach_count == 0


def test_a_client_that_never_reads_does_not_stall_others(broker: BrokerProcess) -> None:
    with broker.connect() as ns:
        ns.create("/pressure", size=2 * MiB).close()
        with raw_session(broker) as sock:
            ask(sock, hello())
            sock.setblocking(False)
            flood = request(attach=session_pb2.AttachRequest(path="/missing", access=1))
            sent = 0
            try:
                while sent < 100_000:
                    sock.send(flood)
                    sent += 1
            except BlockingIOError:
                pass
            assert sent > 10
            for _ in range(20):  # the broker keeps serving everyone else
                with ns.open("/pressure", readonly=True):
                    pass
                assert ns.stat("/pressure").kind == "region"


def test_unix_socket_peer_without_hello_holds_nothing(broker: BrokerProcess) -> None:
    with raw_session(broker), mshare.connect(run_dir=broker.run_dir) as ns:
        assert len(ns.sessions()) == 1


def test_json_logs_one_line_per_lifecycle_event(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker("--log-format", "json", "--log-level", "debug")
    with broker.connect() as ns:
        region = ns.create("/logged", size=2 * MiB)
        ns.open("/logged", readonly=True).close()
        ns.unlink("/logged")
        region.close()
        session_id = ns.session_id
    assert wait_for(lambda: f"session {session_id} closed" in broker.log())
    records = [json.loads(line) for line in broker.log().splitlines()]
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    messages = [record["message"] for record in records]
    expected = [
        f"session {session_id} opened: uid {os.getuid()} gid {os.getgid()} pid {os.getpid()}",
        "region created: default:/logged id",
        "size 2097152",
        "region attached: default:/logged size 2097152",
        "region unlinked: default:/logged",
        "region freed: default:/logged",
        f"session {session_id} closed: uid {os.getuid()} pid {os.getpid()}",
    ]
    for fragment in expected:
        assert any(fragment in message for message in messages), fragment
    assert not any("Traceback" in message or "traceback" in record for record, message in zip(records, messages, strict=True))


def test_systemd_notify_ready_and_stopping(start_broker: Callable[..., BrokerProcess], run_dir: Path) -> None:
    address = str(run_dir.parent / f"{run_dir.name}.notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(10)
        broker = start_broker(env={"NOTIFY_SOCKET": address})
        ready = notify.recv(4096).decode().splitlines()
        assert "READY=1" in ready and f"MAINPID={broker.pid}" in ready
        broker.stop(signal.SIGTERM)
        assert "STOPPING=1" in notify.recv(4096).decode().splitlines()
    os.unlink(address)


def test_a_run_dir_writable_by_others_is_refused(run_dir: Path) -> None:
    run_dir.chmod(0o777)
    try:
        result = run_mshared("--run-dir", str(run_dir), "--metrics-address", "127.0.0.1:0")
    finally:
        run_dir.chmod(0o755)
    assert result.returncode == 1
    assert "writable by others" in result.stderr and "Traceback" not in result.stderr
    assert not list(run_dir.iterdir())


def test_a_failed_start_leaves_nothing_behind(start_broker: Callable[..., BrokerProcess], run_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_mshared("--run-dir", str(run_dir), "--metrics-address", f"127.0.0.1:{port}")
    assert result.returncode == 1, result.stderr
    assert "Address already in use" in result.stderr and "Traceback" not in result.stderr
    assert {p.name for p in run_dir.iterdir()} <= {"mshared.lock"}  # no sockets left to mislead clients
    start_broker()  # and the lock is free
