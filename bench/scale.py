"""Scale: broker memory per region, listing and attach at 100,000 regions, reclaiming 1,000 killed sessions.

One broker, whose RLIMIT_NOFILE is raised to fit every region's memfd (root
only), runs these steps in order:
- attach latency (open + touch the first byte + close) on a fresh directory
  of 10 regions, before anything else exists;
- --regions regions of the minimum size (the alignment) created in ONE
  directory by --creators client processes in parallel (session create +
  close by default: about 3x the rate of gRPC allocate from 4 processes on
  the 2-core test machine); the broker's VmRSS before and after gives bytes per region, and
  Slab from /proc/meminfo (system-wide) the kernel's share;
- a full listdir of that directory (paged, 1,000 entries a page), one page,
  and one page right after a change in the directory;
- attach latency there beside the 10-region directory, alternating over
  --rounds rounds; the ratio is the median of the per-round ratios of p50s;
- --sessions sessions from at most --processes processes, each attaching one
  region; once ns.sessions() shows them all, every process is killed with one
  SIGKILL to their process group, and ns.sessions() is polled until only this
  benchmark's session is left.

The broker runs on one CPU and every client process on the other.

    sudo .venv/bin/python bench/scale.py [--regions 100000] [--sessions 1000] [--processes 50] [--json bench/results/scale.json]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

import mshare
from mshare.client import LIST_PAGE

KiB = 1 << 10
SMALL, BIG = "/small", "/big"
SMALL_COUNT = 10
#: Targets from the issue.
MAX_BYTES_PER_REGION = 2 * KiB
MAX_ATTACH_RATIO = 1.2
MAX_RECLAIM_S = 1.0
#: Broker descriptors beyond one per region and one per session (sockets, logs, the gRPC server).
FD_SLACK = 1024


def name(index: int) -> str:
    return f"r{index:07d}"


#: One creator: connect; on "go" create regions first..stop-1 in a directory; say done once the
#: broker has served all of it (a gRPC call waits for this session's earlier requests, the detaches too).
CREATOR = r"""
import sys
import mshare
run_dir, via, directory = sys.argv[1:4]
size, first, stop = map(int, sys.argv[4:7])
ns = mshare.connect(run_dir=run_dir)
ns.stat(directory)
print("ready", flush=True)
sys.stdin.readline()
for index in range(first, stop):
    path = f"{directory}/r{index:07d}"
    if via == "grpc":
        ns.allocate(path, size)
    else:
        ns.create(path, size).close()
ns.stat(directory)
print("done", flush=True)
"""

#: One holder of sessions: a session per path, each attaching its region; then wait to be killed.
HOLDER = r"""
import sys
import mshare
run_dir, paths = sys.argv[1], sys.argv[2:]
held = []
for path in paths:
    ns = mshare.connect(run_dir=run_dir)
    held.append((ns, ns.open(path)))
print("ready", flush=True)
sys.stdin.readline()
"""


#: CAP_SYS_RESOURCE from <linux/capability.h>: needed to raise a hard resource limit.
CAP_SYS_RESOURCE = 24


def may_raise_limits() -> bool:
    """Whether this process holds CAP_SYS_RESOURCE (root in a container may not)."""
    match = re.search(r"^CapEff:\s+([0-9a-f]+)", Path("/proc/self/status").read_text(), re.M)
    return bool(match and int(match.group(1), 16) >> CAP_SYS_RESOURCE & 1)


def slab_bytes() -> int:
    match = re.search(r"^Slab:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    assert match
    return int(match.group(1)) * KiB


def attach_samples(ns: mshare.Namespace, paths: list[str]) -> list[float]:
    """Seconds of open + touch + close, once per path."""
    samples = []
    for path in paths:
        started = time.perf_counter()
        region = ns.open(path)
        region.buf[0] = 1
        region.close()
        samples.append(time.perf_counter() - started)
    return samples


def timed(op: Any, repeats: int) -> float:
    """Median seconds of op() over repeats."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        op()
        samples.append(time.perf_counter() - started)
    return common.median(samples)


def create_regions(args: argparse.Namespace, run_dir: Path, size: int) -> dict[str, Any]:
    """--regions regions in BIG from --creators processes in parallel; how long it took and what the broker used."""
    creators = max(1, min(args.creators, args.regions))
    bounds = [args.regions * i // creators for i in range(creators + 1)]
    argvs = [[str(run_dir), args.create_via, BIG, str(size), str(bounds[i]), str(bounds[i + 1])] for i in range(creators)]
    broker = common.broker_pid(run_dir)
    with common.Clients(CREATOR, argvs) as clients:
        clients.expect("ready")
        cpu = common.cpu_seconds(broker)
        started = time.perf_counter()
        clients.send("go")
        clients.expect("done")
        seconds = time.perf_counter() - started
        cpu = common.cpu_seconds(broker) - cpu
    return {"processes": creators, "via": args.create_via, "seconds": seconds, "broker_cpu_pct": 100 * cpu / seconds}


def wait_for_sessions(ns: mshare.Namespace, count: int, timeout: float, started: float | None = None) -> tuple[float, int]:
    """Poll ns.sessions() until it lists count sessions; seconds since started (default now) and polls made."""
    if started is None:
        started = time.perf_counter()
    for polls in itertools.count(1):
        if len(ns.sessions()) == count:
            return time.perf_counter() - started, polls
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"ns.sessions() did not come down to {count} within {timeout:.0f} s")
    raise AssertionError("unreachable")


def sessions_phase(args: argparse.Namespace, run_dir: Path, ns: mshare.Namespace) -> dict[str, Any]:
    """--sessions live sessions from at most --processes processes, then all killed at once."""
    wait_for_sessions(ns, 1, 30)  # the creators' sessions are gone
    processes = max(1, min(args.processes, args.sessions))
    shares = [args.sessions // processes + (i < args.sessions % processes) for i in range(processes)]
    starts = [0, *itertools.accumulate(shares)]
    argvs = [
        [str(run_dir), *(f"{BIG}/{name(k % args.regions)}" for k in range(starts[i], starts[i + 1]))] for i in range(processes)
    ]
    started = time.perf_counter()
    with common.Clients(HOLDER, argvs) as clients:
        clients.expect("ready")
        opened = time.perf_counter() - started
        pids = set(clients.pids)
        listing = time.perf_counter()
        live = ns.sessions()
        listing = time.perf_counter() - listing
        theirs = [s for s in live if s.pid in pids]
        if len(theirs) != args.sessions or any(s.attachment_count != 1 for s in theirs) or len(live) != args.sessions + 1:
            raise SystemExit(
                f"ns.sessions() lists {len(live)} sessions, {len(theirs)} of the holders; expected {args.sessions} + 1"
            )
        killed = time.perf_counter()
        clients.kill()
        reclaim, polls = wait_for_sessions(ns, 1, 60, killed)
    return {
        "sessions": args.sessions,
        "processes": processes,
        "open_seconds": opened,
        "sessions_call_seconds": listing,
        "reclaim_seconds": reclaim,
        "polls": polls,
    }


def measure(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    broker = common.broker_pid(run_dir)
    rng = random.Random(1)
    with mshare.connect(run_dir=run_dir) as ns:
        info = ns.info()
        size = info.alignment
        print(f"region_capacity at start: {info.region_capacity:,} (region size {size // KiB:,} KiB, the alignment)", flush=True)
        if info.region_capacity < args.regions + SMALL_COUNT + 16:
            raise SystemExit(f"region_capacity {info.region_capacity:,} is too small for {args.regions:,} regions")
        ns.mkdir(SMALL)
        ns.mkdir(BIG)
        small = [f"{SMALL}/{name(i)}" for i in range(SMALL_COUNT)]
        for path in small:
            ns.allocate(path, size)
        cycle = list(itertools.islice(itertools.cycle(small), args.ops))
        attach_samples(ns, small)  # warm up
        fresh = common.summary(attach_samples(ns, cycle))

        rss_before, slab_before = common.rss_bytes(broker), slab_bytes()
        created = create_regions(args, run_dir, size)
        rss_after, slab_after = common.rss_bytes(broker), slab_bytes()
        print(f"created {args.regions:,} regions in {created['seconds']:.1f} s", flush=True)
        capacity_after = ns.info().region_capacity

        listed = len(ns.listdir(BIG))
        if listed != args.regions:
            raise SystemExit(f"listdir({BIG}) has {listed} entries, expected {args.regions}")
        full = timed(lambda: ns.listdir(BIG), args.list_repeats)
        page = timed(lambda: list(itertools.islice(ns.scandir(BIG), LIST_PAGE)), 20)
        changed = []
        for i in range(5):
            ns.allocate(f"{BIG}/zz-change-{i}", size)
            changed.append(timed(lambda: list(itertools.islice(ns.scandir(BIG), LIST_PAGE)), 1))
            ns.unlink(f"{BIG}/zz-change-{i}")

        rounds: dict[str, list[dict[str, float]]] = {"small": [], "big": []}
        for _ in range(args.rounds):
            rounds["small"].append(common.summary(attach_samples(ns, cycle)))
            picks = [f"{BIG}/{name(i)}" for i in rng.sample(range(args.regions), min(args.ops, args.regions))]
            rounds["big"].append(common.summary(attach_samples(ns, picks)))
        print("attach measured; opening sessions", flush=True)
        sessions = sessions_phase(args, run_dir, ns)

    def medians(per_round: list[dict[str, float]]) -> dict[str, float]:
        return {key: common.median([r[key] for r in per_round]) for key in ("p50_us", "p99_us")}

    return {
        "region_bytes": size,
        "region_capacity": info.region_capacity,
        "region_capacity_after": capacity_after,
        "create": created,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "bytes_per_region": (rss_after - rss_before) / args.regions,
        "slab_bytes_per_region": (slab_after - slab_before) / args.regions,
        "listdir_seconds": full,
        "page_seconds": page,
        "page_after_change_seconds": common.median(changed),
        "attach_fresh_small": fresh,
        "attach_small": medians(rounds["small"]),
        "attach_big": medians(rounds["big"]),
        "attach_ratio": common.median([b["p50_us"] / s["p50_us"] for s, b in zip(rounds["small"], rounds["big"], strict=True)]),
        "attach_rounds": rounds,
        "sessions": sessions,
    }


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def report(args: argparse.Namespace, r: dict[str, Any]) -> str:
    n = f"{args.regions:,}"
    c, s = r["create"], r["sessions"]
    small, big, fresh = r["attach_small"], r["attach_big"], r["attach_fresh_small"]
    pages = -(-args.regions // LIST_PAGE)
    rows = [
        ["region_capacity at start / after", f"{r['region_capacity']:,} / {r['region_capacity_after']:,}", "", ""],
        [
            f"create {n} regions ({c['processes']} processes, {c['via']})",
            f"{c['seconds']:.1f} s ({args.regions / c['seconds']:,.0f}/s, broker CPU {c['broker_cpu_pct']:.0f}%)",
            "",
            "",
        ],
        ["broker VmRSS before / after", f"{r['rss_before'] / 2**20:,.1f} / {r['rss_after'] / 2**20:,.1f} MiB", "", ""],
        [
            "broker memory per region",
            f"{r['bytes_per_region']:,.0f} B",
            f"<= {MAX_BYTES_PER_REGION:,} B",
            verdict(r["bytes_per_region"] <= MAX_BYTES_PER_REGION),
        ],
        ["kernel Slab per region (system-wide)", f"{r['slab_bytes_per_region']:,.0f} B", "", ""],
        [f"full listdir of {n} entries ({pages} pages)", f"{r['listdir_seconds'] * 1e3:,.0f} ms", "", ""],
        [f"one page ({LIST_PAGE:,} entries)", f"{r['page_seconds'] * 1e3:,.1f} ms", "", ""],
        ["one page right after a change in the directory", f"{r['page_after_change_seconds'] * 1e3:,.1f} ms", "", ""],
        [
            f"attach p50 / p99, {SMALL_COUNT} regions, before the big directory",
            f"{fresh['p50_us']:.0f} / {fresh['p99_us']:.0f} us",
            "",
            "",
        ],
        [f"attach p50 / p99, {SMALL_COUNT} regions", f"{small['p50_us']:.0f} / {small['p99_us']:.0f} us", "", ""],
        [f"attach p50 / p99, {n} regions", f"{big['p50_us']:.0f} / {big['p99_us']:.0f} us", "", ""],
        [
            f"attach p50, {n} / {SMALL_COUNT} regions",
            f"{r['attach_ratio']:.2f}x",
            f"<= {MAX_ATTACH_RATIO}x",
            verdict(r["attach_ratio"] <= MAX_ATTACH_RATIO),
        ],
        [f"open {s['sessions']:,} sessions from {s['processes']} processes", f"{s['open_seconds']:.1f} s", "", ""],
        [f"one ns.sessions() with {s['sessions']:,} live", f"{s['sessions_call_seconds'] * 1e3:.1f} ms", "", ""],
        [
            f"reclaim {s['sessions']:,} sessions killed at once",
            f"{s['reclaim_seconds'] * 1e3:,.0f} ms ({s['polls']} poll{'s' if s['polls'] > 1 else ''})",
            f"< {MAX_RECLAIM_S * 1e3:,.0f} ms",
            verdict(s["reclaim_seconds"] < MAX_RECLAIM_S),
        ],
    ]
    return common.table(["figure", "value", "target", "met"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regions", type=int, default=100_000, help="regions in the big directory")
    parser.add_argument("--sessions", type=int, default=1000, help="concurrent sessions to open and kill")
    parser.add_argument("--processes", type=int, default=50, help="at most this many processes hold the sessions")
    parser.add_argument("--creators", type=int, default=4, help="processes creating the regions in parallel")
    parser.add_argument("--create-via", choices=("session", "grpc"), default="session", help="create + close, or allocate")
    parser.add_argument("--ops", type=int, default=400, help="attaches per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the 10-region and big directories")
    parser.add_argument("--list-repeats", type=int, default=3, help="full listings timed (median)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    common.require_two_cpus(parser)
    if min(args.regions, args.sessions, args.processes, args.creators, args.ops, args.rounds, args.list_repeats) < 1:
        parser.error("every count must be positive")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = max(args.regions + args.sessions + FD_SLACK, hard)
    if nofile > hard and not (os.geteuid() == 0 and may_raise_limits()):
        most = hard - args.sessions - FD_SLACK
        parser.error(
            f"{args.regions:,} regions need RLIMIT_NOFILE {nofile:,} in the broker, above the hard limit {hard:,}; raising it "
            f"needs root with CAP_SYS_RESOURCE, which this process lacks: use --regions {most} or fewer"
        )
    common.pin_self(common.CLIENT_CPU)  # the client processes inherit this CPU
    placement = f"broker threads on CPU {common.SERVER_CPU}; every client process (and this one) on CPU {common.CLIENT_CPU}"
    print(f"scale: {args.regions:,} regions, {args.sessions:,} sessions from {args.processes} processes; {placement}")
    print(f"broker RLIMIT_NOFILE {nofile:,}\n", flush=True)
    with common.broker(nofile=nofile) as run_dir:
        results = measure(args, run_dir)
    print()
    print(report(args, results))
    common.write_json(args.json, {"placement": placement, "args": {k: v for k, v in vars(args).items() if k != "json"},
                                  "nofile": nofile, "results": results})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
