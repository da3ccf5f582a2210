"""The SDK's only ctypes code: the arena reservation and fixed-address mappings (mmap, munmap, madvise)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from typing import Final

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_munmap = _libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_madvise = _libc.madvise
_madvise.restype = ctypes.c_int
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

PROT_NONE: Final = mmap.PROT_NONE if hasattr(mmap, "PROT_NONE") else 0
PROT_READ: Final = mmap.PROT_READ
PROT_WRITE: Final = mmap.PROT_WRITE
MAP_SHARED: Final = mmap.MAP_SHARED
MAP_PRIVATE: Final = mmap.MAP_PRIVATE
MAP_ANONYMOUS: Final = mmap.MAP_ANONYMOUS
# The generic Linux values (x86-64, arm64, riscv64); Python 3.11's mmap module lacks them.
MAP_FIXED: Final = 0x10
MAP_NORESERVE: Final = 0x4000
MAP_FIXED_NOREPLACE: Final = 0x100000
MADV_HUGEPAGE: Final = 14

_MAP_FAILED: Final = ctypes.c_void_p(-1).value
_FAILED: Final = (_MAP_FAILED, None)  # what a failed mmap returns (None would be address 0, never asked for)
_RESERVE_FLAGS: Final = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
_RESTORE_FLAGS: Final = _RESERVE_FLAGS | MAP_FIXED
_SHARED_FIXED: Final = MAP_SHARED | MAP_FIXED
_READ_WRITE: Final = PROT_READ | PROT_WRITE


def _fail(what: str, start: int, size: int) -> OSError:
    err = ctypes.get_errno()
    message = f"{what} {start:#x}-{start + size:#x}: {os.strerror(err)}"
    if err == errno.ENOMEM:
        message += _map_count_hint()
    return OSError(err, message)


def _map_count_hint() -> str:
    """Name the limit a process usually hits first: every region is one more mapping."""
    try:
        with open("/proc/sys/vm/max_map_count") as limit, open("/proc/self/maps") as maps:
            allowed, used = int(limit.read()), sum(1 for _ in maps)
    except (OSError, ValueError):
        return ""
    return f" (this process has {used} mappings; vm.max_map_count allows {allowed})"


def _call_mmap(start: int, size: int, prot: int, flags: int, fd: int) -> int:
    addr = _mmap(start, size, prot, flags, fd, 0)
    if addr in _FAILED:
        raise _fail("mmap", start, size)
    return int(addr)


def _noreplace(start: int, size: int, prot: int, flags: int, fd: int) -> None:
    """mmap exactly at start without replacing anything; a kernel that ignores the flag is caught too."""
    try:
        addr = _call_mmap(start, size, prot, flags | MAP_FIXED_NOREPLACE, fd)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise OSError(
                errno.EADDRINUSE, f"address range {start:#x}-{start + size:#x} is already in use in this process"
            ) from None
        raise
    if addr != start:
        _munmap(addr, size)
        raise OSError(errno.EADDRINUSE, f"the kernel placed {start:#x}-{start + size:#x} at {addr:#x}: range in use")


def reserve(start: int, size: int) -> None:
    """Reserve [start, start+size) PROT_NONE so nothing else in the process lands there."""
    _noreplace(start, size, PROT_NONE, _RESERVE_FLAGS, -1)


def map_shared(start: int, size: int, fd: int, writable: bool, over_reservation: bool) -> None:
    """Map fd MAP_SHARED at exactly start: MAP_FIXED over our own reservation, else MAP_FIXED_NOREPLACE."""
    prot = _READ_WRITE if writable else PROT_READ
    if over_reservation:
        _call_mmap(start, size, prot, _SHARED_FIXED, fd)
    else:
        _noreplace(start, size, prot, MAP_SHARED, fd)


def unmap(start: int, size: int, back_to_reservation: bool) -> None:
    """Drop a mapping; inside the arena the PROT_NONE reservation goes back in the same call (no hole)."""
    if back_to_reservation:
        _call_mmap(start, size, PROT_NONE, _RESTORE_FLAGS, -1)
    elif _munmap(start, size) != 0:
        raise _fail("munmap", start, size)


def advise_hugepage(start: int, size: int) -> None:
    if _madvise(start, size, MADV_HUGEPAGE) != 0:
        raise _fail("madvise(MADV_HUGEPAGE)", start, size)


#: ctypes array types by size: most processes map regions of a few sizes, and
#: ``c_ubyte * size`` looks the type up in ctypes' own cache under a new tuple each time.
_ARRAY_TYPES: dict[int, type[ctypes.Array[ctypes.c_ubyte]]] = {}


def array_at(start: int, size: int) -> ctypes.Array[ctypes.c_ubyte]:
    """A ctypes array over mapped memory: the exporter behind a handle's memoryviews."""
    array_type = _ARRAY_TYPES.get(size)
    if array_type is None:
        array_type = _ARRAY_TYPES[size] = ctypes.c_ubyte * size
    return array_type.from_address(start)
