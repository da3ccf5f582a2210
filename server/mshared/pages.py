"""What the kernel offers for page policies: hugetlb pools and the shmem THP setting (read from sysfs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .regions import PagePolicy

HUGEPAGES: Final = Path("/sys/kernel/mm/hugepages")
SHMEM_THP: Final = Path("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
CGROUPS: Final = Path("/sys/fs/cgroup")
#: shmem_enabled values under which MADV_HUGEPAGE gets huge pages for a memfd.
THP_ALLOWING: Final = frozenset({"always", "within_size", "advise", "force"})

_POOLS: Final = {PagePolicy.HUGETLB_2M: "hugepages-2048kB", PagePolicy.HUGETLB_1G: "hugepages-1048576kB"}


@dataclass(frozen=True, slots=True)
class HugePagePool:
    """One hugetlb pool, as /sys/kernel/mm/hugepages reports it now."""

    policy: PagePolicy
    page_bytes: int
    total: int
    free: int
    reserved: int

    @property
    def available(self) -> int:
        """Pages a new region can still take: free and not promised to an existing mapping."""
        return max(0, self.free - self.reserved)


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def pools() -> list[HugePagePool]:
    """The hugetlb pools this kernel has (a pool may hold no pages)."""
    found = []
    for policy, name in _POOLS.items():
        directory = HUGEPAGES / name
        if directory.is_dir():
            found.append(
                HugePagePool(
                    policy,
                    policy.huge_page_bytes,
                    _read_int(directory / "nr_hugepages"),
                    _read_int(directory / "free_hugepages"),
                    _read_int(directory / "resv_hugepages"),
                )
            )
    return found


def pool(policy: PagePolicy) -> HugePagePool | None:
    return next((p for p in pools() if p.policy is policy), None)


def cgroup_room(policy: PagePolicy, proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUPS) -> int | None:
    """Bytes of policy's huge pages our cgroups still allow (v2 hugetlb.<size>.max, v1 limit_in_bytes);
    None when no hugetlb controller limits us. Pages are charged to the broker, which allocates them."""
    size = {PagePolicy.HUGETLB_2M: "2MB", PagePolicy.HUGETLB_1G: "1GB"}.get(policy)
    if size is None:
        return None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    room: int | None = None
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            base, limit, usage = root, f"hugetlb.{size}.max", f"hugetlb.{size}.current"
        elif "hugetlb" in controllers.split(","):
            base, limit, usage = root / "hugetlb", f"hugetlb.{size}.limit_in_bytes", f"hugetlb.{size}.usage_in_bytes"
        else:
            continue
        directory = base / path.lstrip("/")
        while True:  # every ancestor's limit applies too
            try:
                text = (directory / limit).read_text().strip()
                if text != "max":
                    left = int(text) - int((directory / usage).read_text())
                    room = left if room is None else min(room, left)
            except (OSError, ValueError):
                pass
            if directory == base:
                break
            directory = directory.parent
    return room


def thp_setting() -> str:
    """The bracketed choice of shmem_enabled ("never" when THP is absent)."""
    try:
        text = SHMEM_THP.read_text()
    except OSError:
        return "never"
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else text.strip()


def thp_allowed() -> bool:
    return thp_setting() in THP_ALLOWING


def supported_policies() -> frozenset[PagePolicy]:
    """4k and thp everywhere (thp degrades to 4 KiB pages where shmem THP is off); hugetlb where a pool exists."""
    return frozenset({PagePolicy.SMALL, PagePolicy.THP, *(p.policy for p in pools())})


def shortage_message(policy: PagePolicy, size: int) -> str:
    """What to configure when a hugetlb region of size cannot be backed."""
    found = pool(policy)
    page = policy.huge_page_bytes
    needed = -(-size // page)
    kib = page // 1024
    if found is None:
        return f"this kernel has no {kib} kB hugetlb pool"
    room = cgroup_room(policy)
    if room is not None and room < size:
        return (
            f"{needed} {kib} kB huge pages needed, but the broker's cgroup allows {max(0, room) // page} more: "
            f"raise its hugetlb limit (a hugepages-{'2Mi' if page == 2 << 20 else '1Gi'} limit in Kubernetes)"
        )
    return (
        f"{needed} free {kib} kB huge pages needed, {found.available} available "
        f"({found.total} in the pool); add pages with "
        f"`echo {found.total + needed - found.available} > {HUGEPAGES / _POOLS[policy] / 'nr_hugepages'}` "
        f"(or a hugepages-{'2Mi' if page == 2 << 20 else '1Gi'} resource limit in Kubernetes)"
    )
