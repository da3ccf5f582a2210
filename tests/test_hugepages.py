"""Huge-page regions on a real kernel: hugetlb pools, PMD sharing proved from pagemap, thp."""

from __future__ import annotations

import errno
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mshare

from .conftest import ROOT, BrokerProcess, python_child

MiB = 1 << 20
GiB = 1 << 30
HUGE = 2 * MiB
POOL = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")
SHMEM_THP = Path("/sys/kernel/mm/transparent_hugepage/shmem_enabled")


def free_huge_pages() -> int:
    return int((POOL / "free_hugepages").read_text())


@pytest.fixture
def huge_pages() -> Iterator[Callable[[int], None]]:
    """Reserve this many free 2 MiB pages for the test (root only); the old pool size comes back after."""
    if os.geteuid() != 0 or not POOL.is_dir():
        pytest.skip("needs root and a 2 MiB hugetlb pool to reserve huge pages")
    nr = POOL / "nr_hugepages"
    old = int(nr.read_text())

    def reserve(count: int) -> None:
        nr.write_text(str(old + count))
        if free_huge_pages() < count:
            nr.write_text(str(old))
            pytest.skip(f"cannot reserve {count} 2 MiB huge pages (the kernel gave {free_huge_pages()})")

    yield reserve
    nr.write_text(str(old))


def present(start: int, pages: int, pid: str = "self") -> int:
    """How many of the 2 MiB pages from start are present in the page tables of pid (bit 63 of pagemap)."""
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        count = 0
        for i in range(pages):
            pagemap.seek((start + i * HUGE) // 4096 * 8)
            count += struct.unpack("<Q", pagemap.read(8))[0] >> 63
        return count


PROBE = """
import mshare, struct, sys
start = None
with mshare.connect() as ns, ns.open(sys.argv[1]) as region:
    region.buf[0] = 7  # touch exactly one huge page
    with open("/proc/self/pagemap", "rb") as pagemap:
        count = 0
        for i in range(region.size // (2 << 20)):
            pagemap.seek((region.start + i * (2 << 20)) // 4096 * 8)
            count += struct.unpack("<Q", pagemap.read(8))[0] >> 63
    print(hex(region.start), count)
"""


def second_process_sees(broker: BrokerProcess, path: str) -> tuple[str, int]:
    child = python_child(PROBE, path, env={"MSHARE_RUN_DIR": str(broker.run_dir)})
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    start, count = out.split()
    return start, int(count)


def test_hugetlb_region_written_and_read_by_several_processes(
    ns: mshare.Namespace, broker: BrokerProcess, huge_pages: Callable[[int], None]
) -> None:
    huge_pages(4)
    with ns.create("/huge", size=4 * HUGE, page_size="hugetlb-2m", mode=0o666) as region:
        assert region.start % GiB == 0  # placed on a 1 GiB boundary
        assert region.page_size == "hugetlb-2m" and ns.stat("/huge").page_size == "hugetlb-2m"
        code = (
            "import mshare, sys\ni = int(sys.argv[1])\n"
            "with mshare.connect() as ns, ns.open('/huge') as r:\n    r.buf[i * (2 << 20)] = i + 1\n"
        )
        children = [python_child(code, str(i), env={"MSHARE_RUN_DIR": str(broker.run_dir)}) for i in range(4)]
        for child in children:
            assert child.wait(60) == 0
        assert [region.buf[i * HUGE] for i in range(4)] == [1, 2, 3, 4]
        assert "KernelPageSize:     2048 kB" in smaps_of(region.start)


def smaps_of(start: int) -> str:
    text = Path("/proc/self/smaps").read_text()
    match = re.search(rf"^{start:x}-.*?(?=^[0-9a-f]+-[0-9a-f]+ |\Z)", text, re.M | re.S)
    assert match, f"no mapping at {start:#x}"
    return match.group(0)


def test_page_tables_are_shared_when_aligned_and_not_when_misaligned(
    ns: mshare.Namespace, broker: BrokerProcess, huge_pages: Callable[[int], None]
) -> None:
    huge_pages(1024)
    aligned = ns.create("/aligned", size=GiB, page_size="hugetlb-2m", mode=0o666)
    assert aligned.start % GiB == 0
    misaligned_start = ns.info().arena_start + 8 * GiB + HUGE  # a named start needs only huge-page alignment
    misaligned = ns.create("/misaligned", size=GiB, page_size="hugetlb-2m", mode=0o666, start=misaligned_start)
    for region in (aligned, misaligned):
        for offset in range(0, GiB, HUGE):  # this process touches every huge page
            region.buf[offset] = 1
        assert present(region.start, 512) == 512
    # Another process maps the region and touches one page: with the PMD table shared
    # it finds all 512 entries already there; without sharing, only the one it touched.
    assert second_process_sees(broker, "/aligned") == (hex(aligned.start), 512)
    assert second_process_sees(broker, "/misaligned") == (hex(misaligned_start), 1)
    aligned.close()
    misaligned.close()


def test_stat_estimates_page_tables(ns: mshare.Namespace, huge_pages: Callable[[int], None]) -> None:
    huge_pages(512)
    with ns.create("/window", size=GiB, page_size="hugetlb-2m"), ns.open("/window"):
        st = ns.stat("/window")
        assert st.attach_count == 2
        assert st.pagetable_bytes == 4096  # one PMD table for the whole window, shared
        assert st.pagetable_bytes_4k == 2 * (GiB // 4096) * 8
    with ns.create("/small", size=4 * MiB) as region:
        assert ns.stat("/small").pagetable_bytes == ns.stat("/small").pagetable_bytes_4k == 1024 * 8
        del region


def test_unlink_returns_the_huge_pages(ns: mshare.Namespace, huge_pages: Callable[[int], None]) -> None:
    huge_pages(16)
    before = free_huge_pages()
    region = ns.create("/returned", size=16 * HUGE, page_size="hugetlb-2m")
    assert free_huge_pages() == before - 16  # fallocated whole at create
    ns.unlink("/returned")
    assert free_huge_pages() == before - 16  # still mapped here
    region.close()
    ns.stat("/")  # the detach has reached the broker
    assert free_huge_pages() == before


def test_a_create_beyond_the_pool_fails_cleanly(ns: mshare.Namespace, huge_pages: Callable[[int], None]) -> None:
    huge_pages(4)
    before = free_huge_pages()
    with pytest.raises(OSError) as caught:
        ns.create("/too-big", size=(before + 2) * HUGE, page_size="hugetlb-2m")
    assert caught.value.errno == errno.ENOMEM
    assert "nr_hugepages" in str(caught.value)
    assert free_huge_pages() == before
    assert "too-big" not in ns.listdir("/")
    with pytest.raises(OSError) as misfit:
        ns.create("/misfit", size=HUGE, page_size="hugetlb-1g")
    assert misfit.value.errno == errno.EINVAL


def test_info_reports_the_pools(ns: mshare.Namespace, huge_pages: Callable[[int], None]) -> None:
    huge_pages(3)
    info = ns.info()
    assert "hugetlb-2m" in info.page_sizes
    pool = next(p for p in info.huge_pages if p.page_size == "hugetlb-2m")
    assert pool.page_bytes == HUGE and pool.free == free_huge_pages() and pool.total >= 3
    assert info.thp == re.search(r"\[(\w+)\]", SHMEM_THP.read_text()).group(1)  # type: ignore[union-attr]


@pytest.fixture
def shmem_thp_advise() -> Iterator[None]:
    if os.geteuid() != 0 or not SHMEM_THP.exists():
        pytest.skip("needs root and transparent huge pages to change shmem_enabled")
    old = re.search(r"\[(\w+)\]", SHMEM_THP.read_text())
    try:
        SHMEM_THP.write_text("advise")
    except OSError as exc:
        pytest.skip(f"cannot set shmem_enabled: {exc}")
    yield
    if old:
        SHMEM_THP.write_text(old.group(1))


def test_thp_regions_get_huge_pages_where_shmem_thp_allows(ns: mshare.Namespace, shmem_thp_advise: None) -> None:
    with ns.create("/thp", size=8 * MiB, page_size="thp") as region:
        for offset in range(0, region.size, 4096):
            region.buf[offset] = 1
        mapped = re.search(r"^(?:ShmemPmdMapped|FilePmdMapped):\s+(\d+) kB", smaps_of(region.start), re.M)
        assert mapped and int(mapped.group(1)) >= 2048, smaps_of(region.start)
        assert "hg" in re.search(r"^VmFlags:(.*)$", smaps_of(region.start), re.M).group(1).split()  # type: ignore[union-attr]


def test_page_table_benchmark_runs(huge_pages: Callable[[int], None], tmp_path: Path) -> None:
    """bench/pagetables.py end to end at a tiny size (its figures are not checked here)."""
    huge_pages(0)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pagetables.py"), "--processes", "2", "--size-gib", "1",
         "--runs", "1", "--json", str(tmp_path / "out.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hugetlb-2m aligned" in result.stdout and (tmp_path / "out.json").exists()
