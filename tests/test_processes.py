"""Across real processes: the seed's example, pointers, kill -9, deferred unlink, no leaks."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

import mshare

from .conftest import ROOT, BrokerProcess, python_child, spawn, wait_for

MiB = 1 << 20


def run_code(broker: BrokerProcess, code: str, *args: str, timeout: float = 60) -> str:
    child = python_child(code, *args, env={"MSHARE_RUN_DIR": str(broker.run_dir)})
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, err
    return out


def start_holder(broker: BrokerProcess, code: str) -> subprocess.Popen[str]:
    """A child that runs code, prints "ready", then holds everything until killed or its stdin closes."""
    child = python_child(
        code + "\nprint('ready', flush=True)\nimport sys; sys.stdin.readline()\n",
        env={"MSHARE_RUN_DIR": str(broker.run_dir)},
        stdin=subprocess.PIPE,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "ready", line + (child.stderr.read() if child.stderr else "")
    return child


def test_donor_and_consumer_examples(broker: BrokerProcess) -> None:
    env = {"MSHARE_RUN_DIR": str(broker.run_dir)}
    donor = spawn([sys.executable, str(ROOT / "examples" / "donor.py")], env, stdin=subprocess.PIPE)
    assert donor.stdout is not None and donor.stdin is not None
    donor_line = donor.stdout.readline().strip()
    assert donor.stdout.readline().startswith("donor: waiting")
    consumer = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "consumer.py")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=30,
    )
    assert consumer.returncode == 0, consumer.stderr
    address_line, text = consumer.stdout.splitlines()
    with broker.connect() as ns:
        align = ns.info().alignment
        assert ns.stat("/shareme").mode == 0o600
    assert address_line == donor_line
    assert address_line.startswith(f"INFO: {2 * align} bytes shared at addr 0x")
    assert text == "Some random shared text"
    donor.stdin.close()
    assert donor.wait(10) == 0, donor.stderr.read() if donor.stderr else ""
    with broker.connect() as ns:
        assert ns.listdir("/") == []


def test_pointer_stored_in_one_process_followed_in_another(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    region = ns.create("/graph", size=4 * MiB)
    # A linked list inside the region: each node is (next pointer, value), pointers absolute.
    nodes = [region.start + 4096 * (i + 1) for i in range(5)]
    ctypes.c_uint64.from_address(region.start).value = nodes[0]
    for i, node in enumerate(nodes):
        ctypes.c_uint64.from_address(node).value = nodes[i + 1] if i + 1 < len(nodes) else 0
        ctypes.c_uint64.from_address(node + 8).value = (i + 1) * 111
    out = run_code(
        broker,
        """
import ctypes, mshare
with mshare.connect() as ns, ns.open("/graph", readonly=True) as r:
    values, p = [], ctypes.c_uint64.from_address(r.start).value
    while p:
        assert r.start <= p < r.start + r.size
        values.append(ctypes.c_uint64.from_address(p + 8).value)
        p = ctypes.c_uint64.from_address(p).value
    print(hex(r.start), values)
""",
    )
    assert out.split() == [hex(region.start), "[111,", "222,", "333,", "444,", "555]"]
    region.close()


def test_kill_9_ends_attachments_and_frees_unlinked_regions(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    ns.create("/held", size=8 * MiB).close()
    ns.create("/doomed", size=8 * MiB).close()
    ns.stat("/held")  # the gRPC connection is open before the count is taken
    baseline_fds = broker.fd_count()
    holder = start_holder(
        broker,
        """
import mshare
ns = mshare.connect()
held = [ns.open("/held"), ns.open("/held"), ns.open("/doomed")]
held[0].buf[0] = 1
""",
    )
    assert ns.stat("/held").attach_count == 2 and ns.stat("/doomed").attach_count == 1
    doomed_id = ns.stat("/doomed").id
    ns.unlink("/doomed")
    assert len([s for s in ns.sessions() if s.attachments]) == 1
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert wait_for(lambda: ns.stat("/held").attach_count == 0, timeout=1.0)
    assert wait_for(lambda: broker.fd_count() == baseline_fds - 1, timeout=1.0), (broker.fd_count(), baseline_fds)
    assert all(not s.attachments for s in ns.sessions())
    assert f"region freed: default:/doomed id {doomed_id} " in broker.log()


SHARED_WORK = """
import mshare, sys
ns = mshare.connect()
r = ns.open("/busy")
print("ready", flush=True)
for line in sys.stdin:
    cmd, index, value = line.split()
    if cmd == "w":
        r.buf[int(index)] = int(value)
        print("ok", flush=True)
    else:
        print(r.buf[int(index)], flush=True)
r.close()
ns.close()
"""


def test_unlinked_region_stays_shared_until_both_close(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    ns.create("/busy", size=2 * MiB, mode=0o666).close()
    ns.stat("/busy")
    baseline_fds = broker.fd_count()
    env = {"MSHARE_RUN_DIR": str(broker.run_dir)}
    a, b = (python_child(SHARED_WORK, env=env, stdin=subprocess.PIPE) for _ in range(2))

    def ask(child: subprocess.Popen[str], line: str) -> str:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(line + "\n")
        child.stdin.flush()
        return child.stdout.readline().strip()

    for child in (a, b):
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    ns.unlink("/busy")
    assert ns.stat("/") and "busy" not in ns.listdir("/")
    try:
        ns.open("/busy")
        raise AssertionError("open of an unlinked name succeeded")
    except FileNotFoundError:
        pass
    with ns.create("/busy", size=2 * MiB) as fresh:
        assert ask(a, "w 5 42") == "ok"
        assert ask(b, "r 5 0") == "42"  # the old region, still shared
        assert ask(b, "w 6 43") == "ok"
        assert ask(a, "r 6 0") == "43"
        assert fresh.buf[5] == 0  # the new region under the same path is another region
    ns.unlink("/busy")
    for child in (a, b):
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(10) == 0
    assert wait_for(lambda: broker.fd_count() == baseline_fds - 1, timeout=2.0), (broker.fd_count(), baseline_fds)


CHURN = """
import mshare, sys
index, count = int(sys.argv[1]), int(sys.argv[2])
with mshare.connect() as ns:
    regions = [ns.open(f"/churn/r{i}") for i in range(count)]
    for i, r in enumerate(regions):
        r.buf[index] = i % 256
    print("attached", flush=True)
    sys.stdin.readline()
    for r in regions:
        r.close()
"""


def test_200_regions_8_processes_no_leaks(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    ns.mkdir("/churn")  # over gRPC: its connection is open before the count is taken
    baseline_fds = broker.fd_count()
    for i in range(200):
        ns.create(f"/churn/r{i}", size=2 * MiB, mode=0o666).close()
    env = {"MSHARE_RUN_DIR": str(broker.run_dir)}
    children = [python_child(CHURN, str(i), "200", env=env, stdin=subprocess.PIPE) for i in range(8)]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "attached", child.stderr.read() if child.stderr else ""
    assert all(ns.stat(f"/churn/r{i}").attach_count == 8 for i in (0, 99, 199))
    for i in range(200):
        ns.unlink(f"/churn/r{i}")
    assert ns.listdir("/churn") == []
    for child in children:
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(30) == 0, child.stderr.read() if child.stderr else ""
    assert wait_for(lambda: broker.fd_count() == baseline_fds, timeout=2.0), (broker.fd_count(), baseline_fds)
    assert wait_for(lambda: all(not s.attachments for s in ns.sessions()), timeout=2.0)
    ns.rmdir("/churn")
    assert len(ns.sessions()) == 1


def test_sigkill_of_many_sessions_at_once_is_reclaimed(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    ns.create("/many", size=2 * MiB, mode=0o666).close()
    children = [
        start_holder(
            broker,
            """
import mshare
sessions = [mshare.connect() for _ in range(5)]
regions = [s.open("/many") for s in sessions]
""",
        )
        for _ in range(4)
    ]
    assert ns.stat("/many").attach_count == 20
    for child in children:
        child.kill()
    for child in children:
        child.wait()
    assert wait_for(lambda: ns.stat("/many").attach_count == 0, timeout=1.0)
    assert len(ns.sessions()) == 1
