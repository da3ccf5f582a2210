"""An in-memory Backing for the domain core's unit tests: the core has no kernel dependency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mshared.regions import Access, Backing, Region


class MemBacking:
    """An in-memory Backing: the core has no kernel dependency, so this is not a mock of one."""

    def __init__(self, region: Region, path: str) -> None:
        self.region_id = region.id
        self.path = path
        self.closes = 0
        self.handed: list[Access] = []
        self.fd_error: OSError | None = None
        self.resident = 0

    def resident_bytes(self) -> int:
        return self.resident

    def fd_for(self, access: Access) -> int:
        if self.fd_error is not None:
            raise self.fd_error
        self.handed.append(access)
        return fd_of(self.region_id, access)

    def close(self) -> None:
        self.closes += 1


def fd_of(region_id: int, access: Access) -> int:
    return 1000 + region_id * 2 + (access is Access.READ_WRITE)


@dataclass
class Backings:
    """The backing factory: records what it made, and can run a step or fail first."""

    made: dict[int, MemBacking] = field(default_factory=dict)
    before: Callable[[Region], None] | None = None
    error: BaseException | None = None
    calls: int = 0

    def __call__(self, region: Region, path: str) -> Backing:
        self.calls += 1
        if self.before is not None:
            self.before(region)
        if self.error is not None:
            raise self.error
        backing = MemBacking(region, path)
        self.made[region.id] = backing
        return backing
