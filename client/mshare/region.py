"""Region: one handle on a fixed-address mapping; the process-wide table of those mappings."""

from __future__ import annotations

import errno
import os
import sys
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from . import _fixedmap

if TYPE_CHECKING:
    import ctypes

    from .client import Namespace

#: The page policy names, as the API and the CLI write them.
PAGE_SIZES: Final = ("4k", "thp", "hugetlb-2m", "hugetlb-1g")

#: Above every user address; sorts after any (start, end) pair with the same start.
_MAX_ADDRESS: Final = 1 << 64

#: References to a handle's ctypes array when no view of it is alive: the
#: handle's own attribute and getrefcount's argument (each live view's buffer holds one more).
_UNSHARED_REFS: Final = 2

#: This process's pid, kept current by an at-fork hook: the hot paths compare it
#: with the pid that made a handle without a getpid() system call each time.
pid = os.getpid()


class Mapping:
    """One region mapped at its fixed address in this process; every handle on it shares it.

    Holds the memfd and the mapping, which MappingTable makes and ends (at the last handle's release).
    """

    __slots__ = ("_fd", "end", "handles", "in_arena", "key", "size", "start", "writable")

    def __init__(self, key: tuple[str, int, int], start: int, size: int, fd: int, writable: bool, in_arena: bool) -> None:
        self._fd = fd
        self.key = key
        self.start = start
        self.size = size
        self.end = start + size
        self.writable = writable
        self.in_arena = in_arena
        self.handles = 1

    def fileno(self) -> int:
        return self._fd


class MappingTable:
    """The process's arena reservations and region mappings, keyed by (broker, epoch, region id).

    Reservations are kept as a sorted union of ranges, so brokers with the same
    or overlapping arenas share them; mappings are kept sorted by address, so a
    region that would land on another one already mapped here is refused
    instead of silently replacing it.
    """

    def __init__(self) -> None:
        # Guards everything below; held across mmap/munmap so the table and the address space agree.
        self._lock = threading.Lock()
        self._reserved: list[tuple[int, int]] = []  # disjoint, sorted, merged [start, end)
        self._mappings: dict[tuple[str, int, int], Mapping] = {}
        self._starts: list[int] = []  # sorted starts of live mappings
        self._sorted: list[Mapping] = []  # the live mappings, in the same order

    def reserve_arena(self, start: int, size: int) -> None:
        """Reserve a broker's arena (PROT_NONE, MAP_NORESERVE): the parts not yet reserved, once."""
        end = start + size
        with self._lock:
            gaps, cursor = [], start
            for r_start, r_end in self._reserved:
                if r_end <= cursor or r_start >= end:
                    continue
                if r_start > cursor:
                    gaps.append((cursor, r_start))
                cursor = max(cursor, r_end)
            if cursor < end:
                gaps.append((cursor, end))
            done: list[tuple[int, int]] = []
            try:
                for g_start, g_end in gaps:
                    _fixedmap.reserve(g_start, g_end - g_start)
                    done.append((g_start, g_end))
            except OSError as exc:
                for g_start, g_end in done:
                    _fixedmap.unmap(g_start, g_end - g_start, back_to_reservation=False)
                raise OSError(
                    exc.errno, f"cannot reserve the broker's address arena {start:#x}-{end:#x}: {exc.strerror}"
                ) from None
            merged: list[tuple[int, int]] = []
            for r_start, r_end in sorted(self._reserved + done):
                if merged and r_start <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], r_end))
                else:
                    merged.append((r_start, r_end))
            self._reserved = merged

    def acquire(
        self, key: tuple[str, int, int], start: int, size: int, fd: int, writable: bool, path: str, thp: bool = False
    ) -> Mapping:
        """The mapping for key, made now or shared; takes ownership of fd either way.

        Raises EADDRINUSE when the range overlaps another region mapped here,
        and EBUSY when a read-write handle is asked of a region this process
        maps read-only (one mapping per region, as the kernel would share).
        """
        # The attach hot path: one function, no helpers, every lookup once; not `with`,
        # which costs two bound methods per call.
        lock = self._lock
        lock.acquire()
        try:
            mapping = self._mappings.get(key)
            if mapping is not None:
                os.close(fd)
                if writable and not mapping.writable:
                    raise OSError(errno.EBUSY, "this process maps the region read-only; close those handles first", path)
                mapping.handles += 1
                return mapping
            end = start + size
            # Every mapping before slot starts before end; the one just before it must also end by start.
            slot = bisect_left(self._starts, end)
            try:
                if slot and self._sorted[slot - 1].end > start:
                    other = self._sorted[slot - 1]
                    raise OSError(
                        errno.EADDRINUSE,
                        f"{start:#x}-{end:#x} overlaps another region mapped in this process ({other.start:#x}-{other.end:#x})",
                        path,
                    )
                i = bisect_right(self._reserved, (start, _MAX_ADDRESS)) - 1
                in_arena = i >= 0 and self._reserved[i][0] <= start and end <= self._reserved[i][1]
                _fixedmap.map_shared(start, size, fd, writable, in_arena)
            except BaseException:
                os.close(fd)
                raise
            if thp:
                try:
                    _fixedmap.advise_hugepage(start, size)
                except OSError:
                    pass  # a kernel without THP: the region works with 4 KiB pages
            mapping = self._mappings[key] = Mapping(key, start, size, fd, writable, in_arena)
            self._starts.insert(slot, start)
            self._sorted.insert(slot, mapping)
            return mapping
        finally:
            lock.release()

    def release(self, mapping: Mapping, detach: Callable[[int], None], attachment_id: int) -> None:
        """End one handle on mapping: detach(attachment_id) first, then unmap if it was the last handle.

        Telling the broker first lets its wake-up overlap the munmap. The lock is
        held throughout, so no other thread of this process maps a region the
        broker placed in the freed range before this mapping is gone.
        """
        lock = self._lock
        lock.acquire()  # not `with`: the close hot path
        try:
            try:
                detach(attachment_id)
            finally:
                mapping.handles -= 1
                if not mapping.handles:
                    if self._mappings.get(mapping.key) is mapping:  # not a mapping forgotten at fork
                        del self._mappings[mapping.key]
                        slot = bisect_left(self._starts, mapping.start)
                        del self._starts[slot]
                        del self._sorted[slot]
                    fd, mapping._fd = mapping._fd, -1
                    try:
                        _fixedmap.unmap(mapping.start, mapping.size, mapping.in_arena)  # the reservation goes back
                    finally:
                        os.close(fd)
        finally:
            lock.release()

    def forget_after_fork(self) -> None:
        """In a forked child: the inherited mappings belong to the parent's handles; start afresh.

        The arena reservations stay (the child inherited them) and are reused;
        inherited region mappings are replaced when the child maps over them.
        """
        self._lock = threading.Lock()
        self._mappings = {}
        self._starts = []
        self._sorted = []


MAPPINGS: Final = MappingTable()


def _after_fork_in_child() -> None:
    global pid
    pid = os.getpid()
    MAPPINGS.forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Region:
    """A handle on a region mapped at its fixed address.

    ``buf`` is a memoryview of unsigned bytes over the whole region (read-only
    for a read-only handle). close() ends this handle's attachment and unmaps
    the region once no other handle in the process maps it; it raises
    BufferError, changing nothing, while views from buf or ndarray() are alive;
    it is idempotent. close() never removes the name: that is unlink().
    """

    # Slots: one handle is made per open, and a dict per handle costs time and memory.
    __slots__ = (
        "__weakref__",
        "_array",
        "_mapping",
        "_namespace",
        "_pid",
        "attachment_id",
        "id",
        "page_size",
        "path",
        "readonly",
        "size",
        "start",
    )

    def __init__(self, namespace: Namespace, path: str, readonly: bool) -> None:
        """A handle that maps nothing (closed) until _attach(): the SDK makes it while the broker works."""
        self._mapping: Mapping | None = None  # first: __del__ looks at it even if __init__ fails
        self._array: ctypes.Array[ctypes.c_ubyte] | None = None
        self._namespace = namespace
        self._pid = pid
        self.path = path
        self.readonly = readonly
        self.id = self.attachment_id = self.start = self.size = 0
        self.page_size = "4k"

    def _attach(self, mapping: Mapping, region_id: int, attachment_id: int, page_size: str) -> None:
        """Make this handle one of mapping's: what the broker's reply said, and the views' exporter."""
        self.id = region_id
        self.attachment_id = attachment_id
        self.page_size = page_size
        self.start = mapping.start
        self.size = mapping.size
        self._array = _fixedmap.array_at(mapping.start, mapping.size)
        self._mapping = mapping

    @property
    def closed(self) -> bool:
        return self._mapping is None

    @property
    def namespace(self) -> str:
        """The namespace the region lives in."""
        return self._namespace.name

    @property
    def buf(self) -> memoryview:
        """A fresh memoryview ('B') over the whole region; keep it alive and close() refuses."""
        array = self._array
        if array is None:
            raise ValueError("region is closed")
        # ctypes exports '<B', which a memoryview cannot index; the cast keeps the same buffer.
        if self.readonly:
            return memoryview(array).toreadonly().cast("B")
        return memoryview(array).cast("B")

    def fileno(self) -> int:
        """The region's memfd, kept open while the mapping exists (O_RDONLY for read-only attachments)."""
        mapping = self._mapping
        if mapping is None:
            raise ValueError("region is closed")
        return mapping.fileno()

    def ndarray(self, dtype: Any, shape: Any, offset: int = 0) -> Any:
        """A zero-copy numpy array over the region (read-only for a read-only handle); needs numpy."""
        import numpy

        return numpy.ndarray(shape, dtype=dtype, buffer=self.buf, offset=offset)

    def close(self) -> None:
        """End this handle: detach, unmap when it is the process's last handle; idempotent.

        Raises:
            BufferError: views from buf or ndarray() are alive; nothing changed.
        """
        mapping = self._mapping
        if mapping is None:
            return
        if sys.getrefcount(self._array) > _UNSHARED_REFS:  # every live view's buffer holds the array
            raise BufferError(f"cannot close region {self.path}: views from buf or ndarray() are still alive")
        self._array = self._mapping = None
        if self._pid != pid:
            return  # a forked child's copy: the parent's handle owns the mapping and attachment
        MAPPINGS.release(mapping, self._namespace._detach, self.attachment_id)

    def __enter__(self) -> Region:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._mapping is None:
            return
        try:
            self.close()
        except BufferError:
            # Views outlive the handle: keep the mapping (and its attachment) for the
            # rest of the process rather than pull memory from under them.
            _ORPHANS.append(self._mapping)
            self._mapping = None
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("ro" if self.readonly else "rw")
        return f"<mshare.Region {self.namespace}:{self.path} id={self.id} start={self.start:#x} size={self.size} {state}>"


#: Mappings whose handles were collected while views of them were alive.
_ORPHANS: list[Mapping] = []
