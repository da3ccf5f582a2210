"""Aggregate throughput: attach+detach and create+unlink per second from 1, 4 and 16 client processes.

Every operation runs to the region unmapped again:
- attach+detach: open + touch the first byte + close, each process on a 1 MiB
  region of its own;
- attach+detach, same region: the same, every process on one shared region;
- create+unlink: create + touch + close + unlink (a gRPC call), each process
  under names of its own.

For each process count the clients connect, warm up (one operation each) and
say "ready"; the parent then writes "go" with one deadline --seconds away to
all of them, and each counts the operations it finishes before it. Broker CPU
comes from /proc/<pid>/stat over the same window, as does the clients' CPU.
The broker runs on one CPU and every client process on the other, so once
the clients together use all of theirs, adding processes cannot add throughput.

    .venv/bin/python bench/throughput.py [--processes 1 4 16] [--seconds 5] [--rounds 1] [--json bench/results/throughput.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

import mshare

MiB = 1 << 20
SIZE = 1 * MiB

#: One client: connect; on "prepare OP PATH" warm up with one operation and say ready;
#: on "go DEADLINE" repeat the operation until CLOCK_MONOTONIC reaches it and report the count.
CLIENT = r"""
import sys, time
import mshare
run_dir, size = sys.argv[1], int(sys.argv[2])
ns = mshare.connect(run_dir=run_dir)

def attach(path, serial):
    region = ns.open(path)
    region.buf[0] = 1
    region.close()

def create_unlink(path, serial):
    name = f"{path}-{serial}"
    region = ns.create(name, size)
    region.buf[0] = 1
    region.close()
    ns.unlink(name)

OPS = {"attach": attach, "create": create_unlink}
print("ready", flush=True)
for line in sys.stdin:
    words = line.split()
    if words[0] == "prepare":
        op, path = OPS[words[1]], words[2]
        op(path, "warm")
        print("ready", flush=True)
    elif words[0] == "go":
        deadline, count = float(words[1]), 0
        while time.monotonic() < deadline:
            op(path, count)
            count += 1
        print("done", count, flush=True)
"""

#: The cases, in the order they run: (key, label, the client operation).
CASES = (
    ("attach", "attach+detach, own region", "attach"),
    ("attach_shared", "attach+detach, same region", "attach"),
    ("create", "create+unlink", "create"),
)


def run_case(clients: common.Clients, broker: int, paths: list[str], op: str, seconds: float) -> dict[str, Any]:
    """Prepare every client on its path, start them together, and count what they do by the deadline."""
    clients.send_each([f"prepare {op} {path}" for path in paths])
    clients.expect("ready")
    broker_cpu = common.cpu_seconds(broker)
    clients_cpu = sum(common.cpu_seconds(pid) for pid in clients.pids)
    started = time.monotonic()
    deadline = started + seconds
    clients.send(f"go {deadline!r}")
    counts = [int(words[0]) for words in clients.expect("done")]
    wall = time.monotonic() - started
    broker_cpu = common.cpu_seconds(broker) - broker_cpu
    clients_cpu = sum(common.cpu_seconds(pid) for pid in clients.pids) - clients_cpu
    total = sum(counts)
    return {
        "ops": total,
        "ops_per_s": total / seconds,
        "per_process_ops_per_s": [count / seconds for count in counts],
        "broker_cpu_pct": 100 * broker_cpu / wall,
        "clients_cpu_pct": 100 * clients_cpu / wall,
        "broker_cpu_us_per_op": 1e6 * broker_cpu / total if total else 0.0,
    }


def measure(processes: int, args: argparse.Namespace, run_dir: Path, ns: mshare.Namespace) -> dict[str, Any]:
    """The cases with this many client processes, --rounds times, on regions made for them and removed after.

    Each figure is the median over the rounds (the round with the median rate, for the per-process spread).
    """
    own = [f"/tp/own-{i}" for i in range(processes)]
    for path in [*own, "/tp/shared"]:
        ns.allocate(path, SIZE)
    paths = {"attach": own, "attach_shared": ["/tp/shared"] * processes}
    broker = common.broker_pid(run_dir)
    rounds: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in CASES}
    try:
        with common.Clients(CLIENT, [[str(run_dir), str(SIZE)]] * processes) as clients:
            clients.expect("ready")
            for round_no in range(args.rounds):
                for key, _, op in CASES:
                    names = paths.get(key) or [f"/tp/new-{round_no}-{i}" for i in range(processes)]
                    rounds[key].append(run_case(clients, broker, names, op, args.seconds))
    finally:
        for path in [*own, "/tp/shared"]:
            ns.unlink(path)
    results: dict[str, Any] = {}
    for key, per_round in rounds.items():
        middle = sorted(per_round, key=lambda r: r["ops_per_s"])[len(per_round) // 2]
        results[key] = {
            **{name: common.median([r[name] for r in per_round]) for name in MEDIANS},
            "per_process_ops_per_s": middle["per_process_ops_per_s"],
            "rounds": per_round,
        }
    return results


#: The figures taken as medians over rounds.
MEDIANS = ("ops_per_s", "broker_cpu_pct", "clients_cpu_pct", "broker_cpu_us_per_op")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4, 16], help="client process counts to run")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long every case runs")
    parser.add_argument("--rounds", type=int, default=1, help="run every case this many times; report medians")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    common.require_two_cpus(parser)
    if min(args.processes) < 1 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--processes, --seconds and --rounds must be positive")
    common.pin_self(common.CLIENT_CPU)  # the client processes inherit this CPU
    placement = f"broker threads on CPU {common.SERVER_CPU}; every client process (and this one) on CPU {common.CLIENT_CPU}"
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"throughput, {args.seconds:g} s per case{rounds}, 1 MiB regions (broker --alignment 1M), {placement}\n", flush=True)
    results: dict[int, dict[str, Any]] = {}
    with common.broker("--alignment", "1M") as run_dir, mshare.connect(run_dir=run_dir) as ns:
        ns.mkdir("/tp")
        for processes in args.processes:
            results[processes] = measure(processes, args, run_dir, ns)
    print(
        common.table(
            ["processes", "attach+detach/s", "broker CPU", "same region/s", "broker CPU", "create+unlink/s", "broker CPU"],
            [
                [
                    processes,
                    *(
                        cell
                        for key, _, _ in CASES
                        for cell in (f"{by_case[key]['ops_per_s']:,.0f}", f"{by_case[key]['broker_cpu_pct']:.0f}%")
                    ),
                ]
                for processes, by_case in results.items()
            ],
        )
    )
    print()
    rows = [
        [
            label,
            processes,
            f"{r['ops_per_s']:,.0f}",
            f"{min(r['per_process_ops_per_s']):,.0f}-{max(r['per_process_ops_per_s']):,.0f}",
            f"{r['broker_cpu_pct']:.0f}%",
            f"{r['broker_cpu_us_per_op']:.0f}",
            f"{r['clients_cpu_pct']:.0f}%",
        ]
        for key, label, _ in CASES
        for processes, by_case in results.items()
        for r in [by_case[key]]
    ]
    print(common.table(["operation", "processes", "ops/s", "per process", "broker CPU", "broker CPU us/op", "clients CPU"], rows))
    common.write_json(
        args.json,
        {"placement": placement, "seconds": args.seconds, "rounds": args.rounds, "region_bytes": SIZE, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
