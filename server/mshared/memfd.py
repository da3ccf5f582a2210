"""MemFd: the one owner of a region's memfd: create, size, seal, chmod, read-only reopen, close."""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Final

from .errors import BrokerError
from .pages import cgroup_room, pool, shortage_message
from .regions import Access, PagePolicy

#: MFD_NOEXEC_SEAL (Linux 6.3): the memfd can never be made executable. Not in
#: Python 3.11's os module; older kernels refuse it with EINVAL and we go on without.
MFD_NOEXEC_SEAL: Final = 0x0008

#: No client may resize a region (a shrink would SIGBUS every other mapper),
#: and no one may change the seals afterwards.
SEALS: Final = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL

#: memfd names are at most 249 bytes (NAME_MAX minus the "memfd:" prefix).
MEMFD_NAME_MAX: Final = 249

_HUGETLB_FLAGS: Final = {
    PagePolicy.HUGETLB_2M: os.MFD_HUGETLB | os.MFD_HUGE_2MB,
    PagePolicy.HUGETLB_1G: os.MFD_HUGETLB | os.MFD_HUGE_1GB,
}

#: Looked up once: an enum member read through its class costs a Python-level lookup on the attach path.
_READ_WRITE: Final = Access.READ_WRITE

_noexec_seal_supported = True


def _memfd_create(name: str, flags: int) -> int:
    global _noexec_seal_supported
    base = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING | flags
    if _noexec_seal_supported:
        try:
            return os.memfd_create(name, base | MFD_NOEXEC_SEAL)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            _noexec_seal_supported = False
    return os.memfd_create(name, base)


def memfd_name(namespace: str, path: str) -> str:
    """What /proc/PID/maps shows for the region: "memfd:mshare:<namespace>:<path>"."""
    return f"mshare:{namespace}:{path}".encode()[:MEMFD_NAME_MAX].decode(errors="ignore")


class MemFd:
    """A sized, sealed, 0600 memfd; closes both its descriptors on close().

    Args:
        name: the memfd's name, shown in every mapper's /proc/PID/maps.
        size: bytes; the memfd is sealed at exactly this size.
        policy: hugetlb policies create a hugetlb memfd and fallocate it whole,
            so a short pool fails here with ENOMEM instead of a SIGBUS later.
    """

    _fd = -1
    _ro_fd = -1

    def __init__(self, name: str, size: int, policy: PagePolicy) -> None:
        self.size = size
        self._preallocated = bool(policy.huge_page_bytes)
        if self._preallocated:
            found, room = pool(policy), cgroup_room(policy)
            if found is None or found.available * found.page_bytes < size or (room is not None and room < size):
                # Refuse before fallocate takes (and gives back) pages other creates may be waiting for.
                raise BrokerError(errno.ENOMEM, f"not enough {policy.value} pages: {shortage_message(policy, size)}")
        try:
            self._fd = _memfd_create(name, _HUGETLB_FLAGS.get(policy, 0))
        except OSError as exc:
            raise BrokerError.from_os_error(exc, "memfd_create failed") from None
        try:
            os.ftruncate(self._fd, size)
            if policy.huge_page_bytes:
                os.posix_fallocate(self._fd, 0, size)
            os.fchmod(self._fd, 0o600)
            fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, SEALS)
        except OSError as exc:
            self.close()
            if policy.huge_page_bytes and exc.errno in (errno.ENOSPC, errno.ENOMEM):
                raise BrokerError(errno.ENOMEM, f"not enough {policy.value} pages: {shortage_message(policy, size)}") from None
            raise BrokerError.from_os_error(exc, f"cannot back {size} bytes with {policy.value} pages") from None

    def fileno(self) -> int:
        return self._fd

    def fd_for(self, access: Access) -> int:
        """The read-write memfd, or an O_RDONLY reopen of it (opened once, on first need)."""
        if access is _READ_WRITE:
            return self._fd
        if self._ro_fd < 0:
            self._ro_fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDONLY | os.O_CLOEXEC)
        return self._ro_fd

    def resident_bytes(self) -> int:
        """What the kernel has allocated: st_blocks of the memfd; hugetlb memfds are allocated whole."""
        if self._preallocated:
            return self.size
        return os.fstat(self._fd).st_blocks * 512

    def close(self) -> None:
        """Idempotent; the memory goes when the last client mapping goes too."""
        for attr in ("_ro_fd", "_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                setattr(self, attr, -1)
                os.close(fd)
