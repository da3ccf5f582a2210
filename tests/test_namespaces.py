"""Container-like isolation: broker and clients in separate mount, PID and IPC namespaces, sharing only the run dir.

The broker runs as a uid of its own (as the image's USER does) in one set of
namespaces; each client runs as another uid in namespaces of its own, with a
64 KiB /dev/shm and the run dir bind-mounted read-only, as a Kubernetes app
container sees it. Nothing else is shared: no IPC namespace, no PID namespace,
no /dev/shm.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from .conftest import DEADLINE, ROOT, VENV_BIN, BrokerProcess, make_run_dir, wait_for

pytestmark = pytest.mark.root

#: The broker's uid, as in the Dockerfile and the manifests: used by no client.
BROKER_UID: Final = 10001
#: Two clients with uids of their own, like two app containers.
WRITER_UID: Final = 1000
READER_UID: Final = 65534
SHM_BYTES: Final = 64 << 10
MiB: Final = 1 << 20
#: Far beyond /dev/shm (64 KiB here): regions are memfds, which no /dev/shm limit applies to.
REGION_BYTES: Final = 256 * MiB
NAMESPACES: Final = ("mnt", "pid", "ipc")

#: Run as root in the new namespaces: a private tiny /dev/shm, the volume
#: bind-mounted at the container's view of it ($1 = rw or ro), then exec the
#: program, which becomes PID 1 of the new PID namespace.
SETUP: Final = (
    "set -e; "
    f"mount -t tmpfs -o size={SHM_BYTES},mode=1777 mshare-shm /dev/shm; "
    'mount --bind -o "$1" "$2" "$3"; '
    'shift 3; exec "$@"'
)

#: Byte value of each MiB of the region: every MiB differs from its neighbours.
PATTERN: Final = "def pattern(i):\n    return (i * 37 + 11) % 256\n"

WRITER: Final = (
    PATTERN
    + f"""
MiB = {MiB}
ns = mshare.connect()
region = ns.create("/big", size={REGION_BYTES}, mode=0o644)
buf = region.buf
for i in range({REGION_BYTES} // MiB):
    buf[i * MiB:(i + 1) * MiB] = bytes([pattern(i)]) * MiB
shm = os.statvfs("/dev/shm")
run = os.statvfs(os.environ["MSHARE_RUN_DIR"])
print(json.dumps({{
    "start": region.start, "size": region.size, "pid": os.getpid(), "uid": os.getuid(),
    "shm_bytes": shm.f_blocks * shm.f_frsize, "run_dir_readonly": bool(run.f_flag & os.ST_RDONLY),
}}), flush=True)
os.read(0, 1)  # until the test has stopped the broker
intact = all(buf[i * MiB] == pattern(i) and buf[(i + 1) * MiB - 1] == pattern(i) for i in range({REGION_BYTES} // MiB))
buf[0] = pattern(0)
del buf
region.close()
ns.close()
print(json.dumps({{"intact_after_broker_exit": intact}}), flush=True)
"""
)

READER: Final = (
    PATTERN
    + f"""
MiB = {MiB}
ns = mshare.connect()
region = ns.open("/big", readonly=True)
buf = region.buf
same = all(bytes(buf[i * MiB:(i + 1) * MiB]) == bytes([pattern(i)]) * MiB for i in range({REGION_BYTES} // MiB))
try:
    os.close(os.open(f"/proc/self/fd/{{region.fileno()}}", os.O_RDWR))
    reopen = "opened"
except OSError as exc:
    reopen = errno.errorcode[exc.errno]
print(json.dumps({{"start": region.start, "same": same, "readonly": region.readonly, "reopen_rw": reopen}}), flush=True)
os.read(0, 1)  # attached until killed
"""
)


class Sandbox:
    """`unshare --mount --pid --ipc --fork` and the process it forks: PID 1 of the new namespaces.

    Holds a pidfd on that process, so signals reach it and nothing else even
    after it dies; close() kills it (which kills its whole PID namespace),
    reaps unshare and closes every pipe and descriptor.
    """

    _pidfd = -1
    #: The init's pid on the host (in our PID namespace).
    pid = 0

    def __init__(self, argv: list[str], **popen: Any) -> None:
        self.unshare: subprocess.Popen[str] = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--ipc", "--fork", "--mount-proc", *argv], text=True, cwd="/", **popen
        )
        try:
            if not wait_for(self._find_init, timeout=DEADLINE):
                raise AssertionError(f"unshare (pid {self.unshare.pid}) forked no child")
        except BaseException:
            self.close()
            raise

    def _find_init(self) -> bool:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and parent_of(int(entry.name)) == self.unshare.pid:
                try:
                    pidfd = os.pidfd_open(int(entry.name))
                except ProcessLookupError:
                    continue
                if parent_of(int(entry.name)) != self.unshare.pid:  # exited and reused between the two looks
                    os.close(pidfd)
                    continue
                self.pid, self._pidfd = int(entry.name), pidfd
                return True
        if self.unshare.poll() is not None:
            raise AssertionError(f"unshare exited with {self.unshare.returncode} before forking")
        return False

    def ids(self, field: str) -> list[int]:
        """A line of the init's /proc status as numbers: NSpid, Uid (real, effective, saved, fs), Gid."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, values = line.partition(":")
            if name == field:
                return [int(value) for value in values.split()]
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def namespace_pid(self) -> int:
        """The init's pid as its own PID namespace sees it."""
        return self.ids("NSpid")[-1]

    def namespaces(self) -> dict[str, str]:
        return {kind: os.readlink(f"/proc/{self.pid}/ns/{kind}") for kind in NAMESPACES}

    def signal(self, signum: int) -> None:
        signal.pidfd_send_signal(self._pidfd, signum)

    def wait(self, timeout: float = DEADLINE) -> int:
        return self.unshare.wait(timeout)

    def read_json(self, timeout: float = DEADLINE) -> dict[str, Any]:
        """The next line the contained program prints, as JSON; fails with its stderr if it dies first."""
        stdout = self.unshare.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else ""
        if not line:
            self.stop()
            stderr = self.unshare.stderr.read() if self.unshare.stderr else ""
            self.close()
            raise AssertionError(f"no output (exit status {self.unshare.returncode}): {stderr}")
        data = json.loads(line)
        assert isinstance(data, dict)
        return data

    def stop(self) -> None:
        """Kill the namespace's init (and so everything in its PID namespace), reap unshare; idempotent."""
        pidfd, self._pidfd = self._pidfd, -1
        if pidfd >= 0:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(pidfd)
        try:
            self.unshare.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.unshare.kill()
            self.unshare.wait()

    def close(self) -> None:
        """Idempotent: stop, then close every pipe."""
        self.stop()
        for pipe in (self.unshare.stdin, self.unshare.stdout, self.unshare.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def unshare_works() -> str:
    """Why namespaces cannot be made here, or "" when they can."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "--mount", "--pid", "--ipc", "--fork", "--mount-proc", "true"], capture_output=True, text=True, timeout=30
    )
    return "" if probe.returncode == 0 else f"unshare cannot make namespaces here: {probe.stderr.strip()}"


@pytest.fixture
def sandbox_root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to make namespaces, mount and switch uids")
    reason = unshare_works()
    if reason:
        if os.environ.get("CI") and shutil.which("unshare") is not None:
            pytest.fail(reason)
        pytest.skip(reason)
    path = make_run_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sandboxes() -> Iterator[list[Sandbox]]:
    started: list[Sandbox] = []
    yield started
    for sandbox in reversed(started):
        sandbox.close()


def mshare_cli(volume: Path, *args: str) -> Any:
    """The `mshare` command as root on the host, outside every sandbox (so it is pid 0 to the broker too)."""
    result = subprocess.run(
        [str(VENV_BIN / "mshare"), "--run-dir", str(volume), *args, "--json"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_broker_and_clients_share_only_the_run_dir(sandbox_root: Path, sandboxes: list[Sandbox]) -> None:
    # The volume, as a container runtime holds it: owned by the broker's uid, 0755.
    volume = sandbox_root / "volume"
    volume.mkdir()
    volume.chmod(0o755)
    os.chown(volume, BROKER_UID, BROKER_UID)
    # Each sandbox sees the volume at a path of its own, like a container's mount point.
    views = {name: sandbox_root / name / "run" for name in ("broker", "writer", "reader")}
    for view in views.values():
        view.mkdir(parents=True)
        view.parent.chmod(0o755)
    log_path = sandbox_root / "mshared.log"

    with log_path.open("w") as log:
        broker = Sandbox(
            [
                "sh", "-c", SETUP, "sh", "rw", str(volume), str(views["broker"]),
                sys.executable, str(ROOT / "tests" / "contained.py"), str(BROKER_UID), str(BROKER_UID),
                "--run-dir", str(views["broker"]), "--metrics-address", "127.0.0.1:0", "--log-level", "debug",
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    sandboxes.append(broker)
    probe = BrokerProcess(volume)
    assert wait_for(lambda: broker.unshare.poll() is not None or probe.ready()), log_path.read_text()
    assert broker.namespace_pid() == 1
    assert broker.ids("Uid") == broker.ids("Gid") == [BROKER_UID] * 4, "the broker runs as its own uid, not root"

    def client(name: str, uid: int, code: str) -> Sandbox:
        sandbox = Sandbox(
            [
                "sh", "-c", SETUP, "sh", "ro", str(volume), str(views[name]),
                sys.executable, str(ROOT / "tests" / "dropped.py"), str(uid), str(uid), "", code,
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "MSHARE_RUN_DIR": str(views[name])},
        )  # fmt: skip
        sandboxes.append(sandbox)
        return sandbox

    writer = client("writer", WRITER_UID, WRITER)
    written = writer.read_json(timeout=30)
    assert written["shm_bytes"] == SHM_BYTES and written["size"] == REGION_BYTES
    assert written["run_dir_readonly"] is True, "the client's view of the run dir should be a read-only mount"
    assert written["pid"] == 1 and written["uid"] == WRITER_UID

    reader = client("reader", READER_UID, READER)
    read = reader.read_json(timeout=30)
    assert read["same"] is True and read["readonly"] is True
    assert read["start"] == written["start"], "every process maps the region at the same address"
    # The memfd is 0600 and owned by the broker's uid, which no client has: a read-only attacher cannot upgrade.
    assert read["reopen_rw"] == "EACCES"

    # Nothing is shared but the volume.
    host = {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in NAMESPACES}
    seen = [host, broker.namespaces(), writer.namespaces(), reader.namespaces()]
    for kind in NAMESPACES:
        assert len({ns[kind] for ns in seen}) == len(seen), f"{kind} namespaces are shared: {seen}"

    # Peers outside the broker's PID namespace have pid 0; identity is the uid.
    sessions = mshare_cli(volume, "sessions")
    by_uid = {s["uid"]: s for s in sessions}
    assert {WRITER_UID, READER_UID} <= set(by_uid), sessions
    assert all(s["pid"] == 0 for s in sessions), sessions
    assert by_uid[WRITER_UID]["attachment_count"] == 1 and by_uid[READER_UID]["attachment_count"] == 1
    assert mshare_cli(volume, "stat", "/big")["attach_count"] == 2

    # kill -9 reaches the reader's namespace from outside; the broker sees its socket close.
    reader.signal(signal.SIGKILL)
    reader.wait()

    def reclaimed() -> bool:
        uids = {s["uid"] for s in mshare_cli(volume, "sessions")}
        return READER_UID not in uids and mshare_cli(volume, "stat", "/big")["attach_count"] == 1

    assert wait_for(reclaimed, timeout=5, interval=0.2), mshare_cli(volume, "sessions")

    # SIGTERM to the broker itself (PID 1 of its namespace, from the host): it drains and exits 0.
    broker.signal(signal.SIGTERM)
    assert broker.wait() == 0, log_path.read_text()
    text = log_path.read_text()
    assert "mshared stopped" in text and "Traceback" not in text, text
    assert not (volume / "session.sock").exists() and not (volume / "mshare.sock").exists()

    # The writer's mapping outlives the broker.
    assert writer.unshare.stdin is not None
    writer.unshare.stdin.write("\n")
    writer.unshare.stdin.flush()
    assert writer.read_json() == {"intact_after_broker_exit": True}
    assert writer.wait() == 0
