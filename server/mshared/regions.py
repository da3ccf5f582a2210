"""Regions, attachments and the broker-wide address arena: pure Python, no I/O."""

from __future__ import annotations

import enum
import errno
from bisect import bisect_left, bisect_right, insort
from typing import Final, NamedTuple, Protocol

from .errors import BrokerError
from .tree import Node

KiB: Final = 1 << 10
MiB: Final = 1 << 20
GiB: Final = 1 << 30


class PagePolicy(str, enum.Enum):
    """How a region's memory is backed; the value is the name users write."""

    SMALL = "4k"
    THP = "thp"
    HUGETLB_2M = "hugetlb-2m"
    HUGETLB_1G = "hugetlb-1g"

    @property
    def huge_page_bytes(self) -> int:
        """The hugetlb page size, or 0 for policies backed by ordinary memfds."""
        return {PagePolicy.HUGETLB_2M: 2 * MiB, PagePolicy.HUGETLB_1G: GiB}.get(self, 0)


class State(str, enum.Enum):
    ACTIVE = "ACTIVE"
    UNLINKED = "UNLINKED"


class Access(str, enum.Enum):
    READ_ONLY = "ro"
    READ_WRITE = "rw"


class Backing(Protocol):
    """The kernel object behind a region (a memfd); owned by the region once committed."""

    def fd_for(self, access: Access) -> int:
        """A descriptor to hand to an attacher with this access; stays owned by the backing."""

    def resident_bytes(self) -> int:
        """Bytes of memory the kernel has actually allocated for the region."""

    def close(self) -> None: ...


#: Bytes of one page-table entry, and of one page-table page, on x86-64, arm64 and riscv64.
PTE_BYTES: Final = 8
TABLE_BYTES: Final = 4 * KiB
SMALL_PAGE: Final = 4 * KiB


def pagetable_bytes(policy: PagePolicy, start: int, size: int, attachers: int) -> int:
    """Estimated page-table bytes the attachers of a region need once every page is touched.

    4 KiB pages (and thp, whose huge pages are not guaranteed): one 8-byte PTE
    per page per attacher. hugetlb-2m: one 4 KiB PMD table per 1 GiB window;
    the kernel shares it among all attachers when the region covers the whole
    aligned window (PMD sharing), else each attacher has its own.
    hugetlb-1g: one 8-byte PUD entry per page per attacher.
    """
    if attachers <= 0:
        return 0
    if policy is PagePolicy.HUGETLB_1G:
        return attachers * (size // GiB) * PTE_BYTES
    if policy is PagePolicy.HUGETLB_2M:
        first, end = start // GiB, -(-(start + size) // GiB)
        windows = end - first
        full = max(0, (start + size) // GiB - -(-start // GiB))
        return full * TABLE_BYTES + (windows - full) * TABLE_BYTES * attachers
    return attachers * (size // SMALL_PAGE) * PTE_BYTES


class Region(Node):
    """A named (or unlinked-but-attached) shared-memory region."""

    __slots__ = ("attach_count", "backing", "last_path", "namespace", "policy", "size", "start", "state")

    def __init__(
        self, node_id: int, namespace: str, start: int, size: int, policy: PagePolicy, mode: int, uid: int, gid: int
    ) -> None:
        super().__init__(node_id, mode, uid, gid)
        self.namespace = namespace
        self.start = start
        self.size = size
        self.policy = policy
        self.state = State.ACTIVE
        self.attach_count = 0
        self.backing: Backing | None = None
        self.last_path = ""  # the path it had when unlinked, for the events and logs that follow

    def __repr__(self) -> str:
        return f"<Region {self.id} {self.namespace}:{self.path or '(unlinked)'} {self.start:#x}+{self.size:#x}>"


class Attachment(NamedTuple):
    """One open of a region by one session (which keeps it by id)."""

    id: int
    region: Region
    access: Access


def align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def format_range(start: int, size: int) -> str:
    return f"{start:#x}-{start + size:#x}"


class AddressSpace:
    """Which virtual address ranges regions hold, broker-wide.

    Regions the broker places come from the arena, first fit, lowest address
    first; the free gaps are kept sorted so a placement costs O(gaps), not
    O(regions). Ranges named by creators outside the arena are kept apart,
    only to refuse overlaps.
    """

    def __init__(self, arena_start: int, arena_size: int, min_address: int, max_address: int) -> None:
        self.arena_start = arena_start
        self.arena_size = arena_size
        self.min_address = min_address
        self.max_address = max_address
        self._free_starts = [arena_start]
        self._free_ends = [arena_start + arena_size]
        self._named_starts: list[int] = []
        self._named_ends: dict[int, int] = {}

    @property
    def arena_end(self) -> int:
        return self.arena_start + self.arena_size

    @property
    def free_bytes(self) -> int:
        return sum(end - start for start, end in zip(self._free_starts, self._free_ends, strict=True))

    @property
    def largest_free(self) -> int:
        return max((end - start for start, end in zip(self._free_starts, self._free_ends, strict=True)), default=0)

    def allocate(self, size: int, alignment: int) -> int:
        """The lowest free arena range of size bytes starting on alignment; taken."""
        for i, gap_start in enumerate(self._free_starts):
            start = align_up(gap_start, alignment)
            if start + size <= self._free_ends[i]:
                self._carve(i, start, start + size)
                return start
        raise BrokerError(
            errno.ENOMEM,
            f"the address arena {format_range(self.arena_start, self.arena_size)} has no free aligned range "
            f"of {size} bytes; give the broker a larger arena ([arena] size in its config file)",
        )

    def check_named(self, start: int, size: int) -> None:
        """EINVAL unless [start, start+size) is a range a creator may name."""
        end = start + size
        if start < self.min_address or end > self.max_address:
            raise BrokerError(
                errno.EINVAL,
                f"range {format_range(start, size)} is outside the user address space "
                f"{self.min_address:#x}-{self.max_address:#x}",
            )
        if start < self.arena_end and end > self.arena_start and (start < self.arena_start or end > self.arena_end):
            raise BrokerError(
                errno.EINVAL,
                f"range {format_range(start, size)} straddles the arena boundary "
                f"{format_range(self.arena_start, self.arena_size)}",
            )

    def claim(self, start: int, size: int) -> None:
        """Take a creator-named range; EADDRINUSE if any live region overlaps it."""
        self.check_named(start, size)
        end = start + size
        if self.arena_start <= start < self.arena_end:
            i = bisect_right(self._free_starts, start) - 1
            if i < 0 or self._free_ends[i] < end:
                raise self._in_use(start, size)
            self._carve(i, start, end)
            return
        i = bisect_left(self._named_starts, end)
        if i > 0 and self._named_ends[self._named_starts[i - 1]] > start:
            raise self._in_use(start, size)
        insort(self._named_starts, start)
        self._named_ends[start] = end

    def release(self, start: int, size: int) -> None:
        """Give a range back; arena gaps coalesce with their neighbours."""
        end = start + size
        if not self.arena_start <= start < self.arena_end:
            self._named_starts.remove(start)
            del self._named_ends[start]
            return
        i = bisect_left(self._free_starts, start)
        merge_left = i > 0 and self._free_ends[i - 1] == start
        merge_right = i < len(self._free_starts) and self._free_starts[i] == end
        if merge_left and merge_right:
            self._free_ends[i - 1] = self._free_ends[i]
            del self._free_starts[i], self._free_ends[i]
        elif merge_left:
            self._free_ends[i - 1] = end
        elif merge_right:
            self._free_starts[i] = start
        else:
            self._free_starts.insert(i, start)
            self._free_ends.insert(i, end)

    def _carve(self, i: int, start: int, end: int) -> None:
        gap_start, gap_end = self._free_starts[i], self._free_ends[i]
        pieces = [(s, e) for s, e in ((gap_start, start), (end, gap_end)) if e > s]
        self._free_starts[i : i + 1] = [s for s, _ in pieces]
        self._free_ends[i : i + 1] = [e for _, e in pieces]

    @staticmethod
    def _in_use(start: int, size: int) -> BrokerError:
        return BrokerError(errno.EADDRINUSE, f"range {format_range(start, size)} overlaps a live region")
