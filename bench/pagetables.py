"""Page-table bytes per attacher of one big region, by page policy: what sharing page tables saves.

N processes start, connect and warm up (each opens, touches and closes a small
region, so the SDK's own allocations are out of the figure). Then all of them
attach one region of S GiB and touch every page. PageTables from
/proc/meminfo (which counts a shared page table once) is read between those
two steps and after; the difference divided by N is the figure. Each process's
VmPTE is printed beside it: it charges a shared table to every sharer, so it
cannot show sharing. Best of --runs runs.

Cases: 4k; thp (shmem_enabled is set to advise for the run and put back);
hugetlb-2m placed by the broker on a 1 GiB boundary (its PMD tables are shared);
hugetlb-2m at a start misaligned by 2 MiB (nothing to share).

Run as root (it reserves the huge pages it needs and restores the pool):
    sudo .venv/bin/python bench/pagetables.py [--processes 16] [--size-gib 4] [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mshare

MiB = 1 << 20
GiB = 1 << 30
HUGE = 2 * MiB
POOL = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
SHMEM_THP = Path("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
STAT_REFRESH = Path("/proc/sys/vm/stat_refresh")
BIN = Path(sys.executable).parent

#: One attacher: connect, warm up, say ready; on "go" attach and touch every page; report VmPTE.
CHILD = r"""
import ctypes, mmap, os, sys
import mshare
MADV_POPULATE_WRITE = 23  # Linux 5.14: fault in every page, writable, in one call
libc = ctypes.CDLL(None, use_errno=True)
libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

def touch(region):
    if libc.madvise(region.start, region.size, MADV_POPULATE_WRITE) != 0:
        step = 4096
        for offset in range(0, region.size, step):
            region.buf[offset] = 1

def vm_pte():
    for line in open("/proc/self/status"):
        if line.startswith("VmPTE:"):
            return int(line.split()[1]) * 1024
    return 0

ns = mshare.connect()
with ns.open("/warmup") as warm:
    touch(warm)
print("ready", flush=True)
sys.stdin.readline()
region = ns.open(sys.argv[1])
touch(region)
print("done", vm_pte(), flush=True)
sys.stdin.readline()
"""


def page_tables() -> int:
    """PageTables from /proc/meminfo, in bytes: every page-table page of the machine, each counted once.

    The kernel folds per-CPU counter deltas into /proc/meminfo only every
    vm.stat_interval; writing stat_refresh folds them now, so a few pages show.
    """
    STAT_REFRESH.write_text("1")
    match = re.search(r"^PageTables:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    assert match
    return int(match.group(1)) * 1024


@contextlib.contextmanager
def broker(run_dir: Path) -> Iterator[None]:
    proc = subprocess.Popen(
        [str(BIN / "mshared"), "--run-dir", str(run_dir), "--metrics-address", "127.0.0.1:0", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (run_dir / "mshare.sock").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("mshared did not start")
            time.sleep(0.05)
        time.sleep(0.2)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@contextlib.contextmanager
def sysctl(path: Path, value: str) -> Iterator[str]:
    """Write a kernel setting for the duration; yields what was there."""
    old = path.read_text().strip()
    previous = m.group(1) if (m := re.search(r"\[(\S+)\]", old)) else old
    path.write_text(value)
    try:
        yield previous
    finally:
        path.write_text(previous)


def attach_all(path: str, processes: int, run_dir: Path) -> tuple[int, list[int]]:
    """Page-table bytes the attachers added in all, and each one's VmPTE."""
    env = {**os.environ, "MSHARE_RUN_DIR": str(run_dir)}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        before = page_tables()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        ptes = []
        for child in children:
            assert child.stdout is not None
            word, pte = child.stdout.readline().split()
            assert word == "done"
            ptes.append(int(pte))
        return page_tables() - before, ptes
    finally:
        for child in children:
            child.kill()
            child.wait()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()


def measure(args: argparse.Namespace, run_dir: Path) -> list[dict[str, Any]]:
    size = args.size_gib * GiB
    results = []
    with mshare.connect(run_dir=run_dir) as ns:
        ns.allocate("/warmup", size=HUGE, mode=0o666)
        cases: list[tuple[str, str, int | None]] = [
            ("4k", "4k", None),
            ("thp", "thp", None),
            ("hugetlb-2m aligned", "hugetlb-2m", None),
            ("hugetlb-2m misaligned", "hugetlb-2m", ns.info().arena_start + 64 * GiB + HUGE),
        ]
        for name, page_size, start in cases:
            if args.only and name.split()[0] not in args.only:
                continue
            per_run = []
            thp = sysctl(SHMEM_THP, "advise") if page_size == "thp" and SHMEM_THP.exists() else contextlib.nullcontext("")
            with thp as thp_before:
                for _ in range(args.runs):
                    stat = ns.allocate("/big", size=size, mode=0o666, page_size=page_size, start=start)
                    try:
                        added, ptes = attach_all("/big", args.processes, run_dir)
                    finally:
                        ns.unlink("/big")
                    per_run.append((added / args.processes, statistics.median(ptes), stat.start))
            best = min(per_run)
            results.append(
                {
                    "case": name,
                    "page_size": page_size,
                    "start": hex(best[2]),
                    "start_mod_1g": best[2] % GiB,
                    "pagetables_per_attacher": best[0],
                    "vmpte_median": best[1],
                    "runs": [r[0] for r in per_run],
                    "shmem_enabled_was": thp_before or None,
                }
            )
            print(f"  measured {name}: {best[0] / 1024:,.1f} KiB per attacher", file=sys.stderr, flush=True)
    return results


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    base = next((r["pagetables_per_attacher"] for r in results if r["case"] == "4k"), None)
    lines = [
        f"page-table bytes per attacher: {args.processes} processes, one {args.size_gib} GiB region, every page touched "
        f"(best of {args.runs}; PageTables from /proc/meminfo)",
        "",
        f"{'case':<24}{'start % 1 GiB':>15}{'per attacher':>16}{'VmPTE (median)':>17}{'4k / case':>12}",
    ]
    for r in results:
        ratio = f"{base / r['pagetables_per_attacher']:,.0f}x" if base and r["pagetables_per_attacher"] > 0 else "-"
        lines.append(
            f"{r['case']:<24}{r['start_mod_1g'] // MiB:>12} MiB{r['pagetables_per_attacher'] / 1024:>12,.1f} KiB"
            f"{r['vmpte_median'] / 1024:>13,.0f} KiB{ratio:>12}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="cases to run: 4k thp hugetlb-2m")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: it reserves huge pages in /proc/sys/vm/nr_hugepages")
    run_dir = Path(tempfile.mkdtemp(prefix="mshare-bench-"))
    run_dir.chmod(0o755)
    pages = int(POOL.read_text()) + args.size_gib * GiB // HUGE
    try:
        with sysctl(POOL, str(pages)), broker(run_dir):
            if int(Path("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages").read_text()) < pages:
                print(f"warning: the kernel reserved fewer than {pages} huge pages", file=sys.stderr)
            results = measure(args, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps({"processes": args.processes, "size_gib": args.size_gib, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
