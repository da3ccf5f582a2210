"""Attach and create latency: mshare beside the raw SCM_RIGHTS floor and multiprocessing.shared_memory.

Every operation is timed from the request to the region unmapped again:
- raw floor: request + memfd over SCM_RIGHTS on a kept SOCK_SEQPACKET connection
  (a Python helper process) + mmap at a fixed address + touch + munmap;
- shm: multiprocessing.shared_memory attach by name + touch + close (no broker);
- attach: mshare open + touch the first byte + close;
- wire: the same attach spoken on the session protocol by hand, without the
  SDK (attach, map, touch, detach on the detach channel, unmap): what the
  broker and the protocol cost, so that attach minus wire is the SDK's share;
- re-open: the same while another handle keeps the region mapped (no mmap);
- create+map: mshare create + touch (the unlink and close are not timed);
- create+map+unlink: the same, with close and unlink (a gRPC call) timed.

The client runs on one CPU and the server side (the broker's threads, the raw
helper) on the other. Baseline and mshare alternate over --rounds rounds, each
round starting one operation further along, each timed run after WARMUP untimed
operations of its own; the ratios are medians of the per-round ratios of p50s.

    .venv/bin/python bench/attach.py [--rounds 12] [--ops 300] [--spin-us N] [--json bench/results/attach.json]
"""

from __future__ import annotations

import argparse
import array
import ctypes
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

import mshare
from mshare import _fixedmap
from mshare.v1 import resources_pb2, session_pb2

MiB = 1 << 20
SIZES = (1 * MiB, 64 * MiB)

#: The raw floor's server: holds one memfd and sends it on every request.
RAW_SERVER = r"""
import array, os, socket, sys
path, size = sys.argv[1], int(sys.argv[2])
fd = os.memfd_create("raw", os.MFD_CLOEXEC)
os.ftruncate(fd, size)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
listener.bind(path)
listener.listen(1)
print("ready", flush=True)
conn, _ = listener.accept()
rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
while conn.recv(64):
    conn.sendmsg([b"ok"], rights)
"""


class RawFloor:
    """The client side of the raw floor, mapping at a fixed address reserved for it."""

    def __init__(self, size: int, address: int, workdir: Path) -> None:
        self.size, self.address = size, address
        path = str(workdir / f"raw-{size}.sock")
        self.server = subprocess.Popen([sys.executable, "-c", RAW_SERVER, path, str(size)], stdout=subprocess.PIPE, text=True)
        assert self.server.stdout is not None and self.server.stdout.readline().strip() == "ready"
        common.pin_process(self.server.pid, common.SERVER_CPU)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(path)
        _fixedmap.reserve(address, size)

    def op(self) -> None:
        self.sock.send(b"get")
        _, ancillary, _, _ = self.sock.recvmsg(64, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
        fds = array.array("i")
        fds.frombytes(ancillary[0][2])
        _fixedmap.map_shared(self.address, self.size, fds[0], True, over_reservation=True)
        ctypes.c_ubyte.from_address(self.address).value = 1
        _fixedmap.unmap(self.address, self.size, back_to_reservation=True)
        os.close(fds[0])

    def close(self) -> None:
        self.sock.close()
        self.server.wait(10)
        assert self.server.stdout is not None
        self.server.stdout.close()
        _fixedmap.unmap(self.address, self.size, back_to_reservation=False)


class WireClient:
    """The session protocol by hand (docs/protocol.md): the least an SDK can do per attach.

    Maps inside the arena the namespace's SDK reserved, on a region of its own.
    """

    def __init__(self, run_dir: Path, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(str(run_dir / "session.sock"))
        hello = session_pb2.SessionRequest(request_id=1)
        hello.hello.min_protocol_version = hello.hello.max_protocol_version = 1
        hello.hello.detach_channel = True
        self.sock.send(hello.SerializeToString())
        data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
        assert session_pb2.SessionResponse.FromString(data).hello.detach_channel
        self.channel = socket.socket(fileno=int.from_bytes(ancillary[0][2], sys.byteorder))
        self.ids = 1
        self.attach = session_pb2.SessionRequest()
        self.attach.attach.path = path
        self.attach.attach.access = resources_pb2.ACCESS_READ_WRITE
        self.detach = session_pb2.SessionRequest()
        self.detach.detach.SetInParent()

    def op(self) -> None:
        self.ids += 1
        self.attach.request_id = self.ids
        self.sock.send(self.attach.SerializeToString())
        data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
        descriptor = session_pb2.SessionResponse.FromString(data).attach.descriptor
        fd, start, size = int.from_bytes(ancillary[0][2], sys.byteorder), descriptor.start, descriptor.size_bytes
        _fixedmap.map_shared(start, size, fd, True, over_reservation=True)
        ctypes.c_ubyte.from_address(start).value = 1
        self.ids += 1
        self.detach.request_id = self.ids
        del self.detach.detach.attachment_ids[:]
        self.detach.detach.attachment_ids.append(descriptor.attachment_id)
        self.channel.send(self.detach.SerializeToString())
        _fixedmap.unmap(start, size, back_to_reservation=True)
        os.close(fd)

    def close(self) -> None:
        self.channel.close()
        self.sock.close()


#: Operations run before each timed run, untimed: the first ones after a switch pay for cold caches.
WARMUP = 50


def timed(op: Callable[[], object], count: int, untimed: Callable[[], object] | None = None) -> list[float]:
    for _ in range(WARMUP):
        op()
        if untimed is not None:
            untimed()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        op()
        samples.append(time.perf_counter() - started)
        if untimed is not None:
            untimed()
    return samples


def shm_attach(name: str) -> Callable[[], None]:
    def op() -> None:
        shm = shared_memory.SharedMemory(name)
        shm.buf[0] = 1
        shm.close()

    return op


class MshareOps:
    """The mshare operations on regions of one size."""

    def __init__(self, ns: mshare.Namespace, size: int) -> None:
        self.ns, self.size = ns, size
        self.path = f"/bench-{size}"
        ns.allocate(self.path, size=size, mode=0o600)
        self.created: list[mshare.Region] = []
        self.serial = 0

    def attach(self) -> None:
        region = self.ns.open(self.path)
        region.buf[0] = 1
        region.close()

    def create(self) -> None:
        self.serial += 1
        region = self.ns.create(f"/new-{self.size}-{self.serial}", size=self.size)
        region.buf[0] = 1
        self.created.append(region)

    def drop_created(self) -> None:
        region = self.created.pop()
        region.close()
        self.ns.unlink(region.path)

    def create_unlink(self) -> None:
        self.create()
        self.drop_created()


def measure_size(ns: mshare.Namespace, size: int, raw: RawFloor, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    ops = MshareOps(ns, size)
    ns.allocate(f"/wire-{size}", size=size, mode=0o600)
    wire = WireClient(run_dir, f"/wire-{size}")
    shm = shared_memory.SharedMemory(create=True, size=size)
    resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]

    def forget_shm() -> None:
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]

    def reopen() -> list[float]:
        with ns.open(ops.path):
            return timed(ops.attach, args.ops)

    runs: dict[str, Callable[[], list[float]]] = {
        "raw": lambda: timed(raw.op, args.ops),
        "attach": lambda: timed(ops.attach, args.ops),
        "wire": lambda: timed(wire.op, args.ops),
        "shm": lambda: timed(shm_attach(shm.name), args.ops, forget_shm),
        "reopen": reopen,
        "create": lambda: timed(ops.create, args.ops // 4, ops.drop_created),
        "create_unlink": lambda: timed(ops.create_unlink, args.ops // 4),
    }
    order = list(runs)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in NAMES}
    for number in range(args.rounds):
        # Each round starts one further along: no operation always runs right after the same other one.
        for name in order[number % len(order) :] + order[: number % len(order)]:
            rounds[name].append(common.summary(runs[name]()))
    shm.close()
    resource_tracker.register(shm._name, "shared_memory")  # type: ignore[attr-defined]  # unlink() unregisters it
    shm.unlink()
    wire.close()
    ns.unlink(ops.path)
    ns.unlink(wire.path)
    return {
        name: {
            "p50_us": common.median([r["p50_us"] for r in per_round]),
            "p99_us": common.median([r["p99_us"] for r in per_round]),
            "ratio_to_raw": common.median(
                [r["p50_us"] / floor["p50_us"] for r, floor in zip(per_round, rounds["raw"], strict=True)]
            ),
        }
        for name, per_round in rounds.items()
    }


def measure(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with mshare.connect(run_dir=run_dir) as ns:
        raw_address = ns.info().arena_start - (64 << 30)
        for size in SIZES:
            raw = RawFloor(size, raw_address, run_dir)
            try:
                results[f"{size // MiB} MiB"] = measure_size(ns, size, raw, args, run_dir)
            finally:
                raw.close()
    return results


NAMES = {
    "raw": "raw floor (fd over SCM_RIGHTS + mmap + touch + munmap)",
    "shm": "multiprocessing.shared_memory attach + touch + close",
    "attach": "mshare attach (open + touch + close)",
    "wire": "the same on the wire protocol, without the SDK",
    "reopen": "mshare re-open of a region already mapped",
    "create": "mshare create + map + touch",
    "create_unlink": "mshare create + map + touch + close + unlink",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="rounds; each starts one operation further along")
    parser.add_argument("--ops", type=int, default=300, help="operations per measurement per round")
    parser.add_argument("--spin-us", type=int, default=0, help="run the broker with --spin-us N")
    parser.add_argument("--client-spin-us", type=int, default=0, help="and this client with MSHARE_CLIENT_SPIN_US=N")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    common.require_two_cpus(parser)
    common.pin_self(common.CLIENT_CPU)
    os.environ["MSHARE_CLIENT_SPIN_US"] = str(args.client_spin_us)
    extra = ("--alignment", "1M", *(("--spin-us", str(args.spin_us)) if args.spin_us else ()))
    with common.broker(*extra) as run_dir:
        results = measure(args, run_dir)
    placement = f"client on CPU {common.CLIENT_CPU}; broker threads and raw helper on CPU {common.SERVER_CPU}"
    print(
        f"attach latency, {args.rounds} rounds x {args.ops} operations, {placement}, "
        f"broker spin {args.spin_us} us, client spin {args.client_spin_us} us\n"
    )
    for label, by_op in results.items():
        rows = [
            [NAMES[name], f"{v['p50_us']:.0f}", f"{v['p99_us']:.0f}", f"{v['ratio_to_raw']:.2f}"] for name, v in by_op.items()
        ]
        print(f"{label} regions")
        print(common.table(["operation", "p50 us", "p99 us", "p50 / raw floor"], rows))
        print()
    settings = {"rounds": args.rounds, "ops": args.ops, "spin_us": args.spin_us, "client_spin_us": args.client_spin_us}
    common.write_json(args.json, {"placement": placement, **settings, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
