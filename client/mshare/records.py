"""What the SDK reports: Stat, Info, SessionInfo, Event, and their conversion from mshare.v1 messages."""

from __future__ import annotations

import stat as stat_module
from dataclasses import dataclass
from typing import Final

from .region import PAGE_SIZES
from .v1 import broker_service_pb2 as pb
from .v1 import resources_pb2

POLICY_NUMBERS: Final[dict[str, resources_pb2.PagePolicy]] = dict(
    zip(
        PAGE_SIZES,
        (
            resources_pb2.PAGE_POLICY_4K,
            resources_pb2.PAGE_POLICY_THP,
            resources_pb2.PAGE_POLICY_HUGETLB_2M,
            resources_pb2.PAGE_POLICY_HUGETLB_1G,
        ),
        strict=False,
    )
)
POLICY_NAMES: Final = {number: name for name, number in POLICY_NUMBERS.items()}
_STATES: Final = {resources_pb2.REGION_STATE_ACTIVE: "ACTIVE", resources_pb2.REGION_STATE_UNLINKED: "UNLINKED"}
ACCESS_NAMES: Final = {resources_pb2.ACCESS_READ_ONLY: "ro", resources_pb2.ACCESS_READ_WRITE: "rw"}


@dataclass(frozen=True, slots=True, repr=False)
class Stat:
    """What stat() reports of a region or a directory."""

    id: int
    path: str
    kind: str  # "region" or "directory"
    start: int
    size: int
    mode: int  # permission bits only, like stat.S_IMODE(st_mode)
    uid: int
    gid: int
    page_size: str | None  # "4k", "thp", "hugetlb-2m", "hugetlb-1g"; None for directories
    attach_count: int
    state: str | None  # "ACTIVE" or "UNLINKED"; None for directories
    namespace: str
    created: float  # seconds since the epoch
    pagetable_bytes: int = 0  # estimated page-table bytes its attachers need (docs/design.md)
    pagetable_bytes_4k: int = 0  # the same estimate had it 4 KiB pages

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def filemode(self) -> str:
        """Like ls -l: drwxrwxrwt, -rw-------."""
        kind = stat_module.S_IFDIR if self.kind == "directory" else stat_module.S_IFREG
        return stat_module.filemode(kind | self.mode)

    def __repr__(self) -> str:
        return (
            f"Stat(id={self.id}, path={self.path!r}, kind={self.kind!r}, start={self.start:#x}, size={self.size}, "
            f"mode={self.mode:#o}, uid={self.uid}, gid={self.gid}, page_size={self.page_size!r}, "
            f"attach_count={self.attach_count}, state={self.state!r}, namespace={self.namespace!r})"
        )


@dataclass(frozen=True, slots=True)
class HugePages:
    """One hugetlb pool of the broker's machine."""

    page_size: str  # "hugetlb-2m" or "hugetlb-1g"
    page_bytes: int
    total: int
    free: int
    reserved: int  # free pages already promised to existing mappings


@dataclass(frozen=True, slots=True)
class Info:
    """mshare_info: the namespace's alignment, the broker's arena, and the page sizes it can back."""

    alignment: int
    arena_start: int
    arena_size: int
    page_sizes: tuple[str, ...]
    namespace: str
    default_page_size: str
    broker_version: str
    epoch: int
    region_capacity: int
    huge_pages: tuple[HugePages, ...] = ()
    thp: str = ""  # shmem_enabled; thp regions get huge pages under always, within_size, advise, force


@dataclass(frozen=True, slots=True)
class Attachment:
    id: int
    region_id: int
    namespace: str
    path: str
    access: str  # "ro" or "rw"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A live session, as the broker sees it."""

    id: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    pid: int
    namespace: str
    client_version: str
    attachment_count: int
    attachments: tuple[Attachment, ...]  # listed only to root and to the session's own uid


def stat_of(entry: resources_pb2.Entry) -> Stat:
    is_dir = entry.kind == resources_pb2.ENTRY_KIND_DIRECTORY
    return Stat(
        id=entry.id,
        path=entry.path,
        kind="directory" if is_dir else "region",
        start=entry.start,
        size=entry.size_bytes,
        mode=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        page_size=None if is_dir else POLICY_NAMES.get(entry.page_policy),
        attach_count=entry.attach_count,
        state=None if is_dir else _STATES.get(entry.state),
        namespace=entry.namespace,
        created=entry.create_time.ToNanoseconds() / 1e9,
        pagetable_bytes=entry.pagetable_bytes,
        pagetable_bytes_4k=entry.pagetable_bytes_4k,
    )


_EVENT_KINDS: Final = {
    pb.WATCH_EVENT_KIND_EXISTING: "existing",
    pb.WATCH_EVENT_KIND_SYNCED: "synced",
    pb.WATCH_EVENT_KIND_CREATED: "created",
    pb.WATCH_EVENT_KIND_RENAMED: "renamed",
    pb.WATCH_EVENT_KIND_UNLINKED: "unlinked",
    pb.WATCH_EVENT_KIND_FREED: "freed",
    pb.WATCH_EVENT_KIND_ATTACHED: "attached",
    pb.WATCH_EVENT_KIND_DETACHED: "detached",
}


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a watch: kind is "existing" (the initial snapshot), "synced" (snapshot done),
    "created", "renamed", "unlinked", "freed", "attached" or "detached"."""

    kind: str
    path: str
    namespace: str
    stat: Stat | None = None  # the entry as of the event; None for "synced"
    old_path: str = ""  # for "renamed"
    session_id: int = 0  # for "attached" and "detached"
    access: str | None = None  # "ro" or "rw", for "attached" and "detached"


def event_of(message: pb.WatchResponse) -> Event:
    return Event(
        kind=_EVENT_KINDS.get(message.kind, "unknown"),
        path=message.path,
        namespace=message.namespace,
        stat=stat_of(message.entry) if message.HasField("entry") else None,
        old_path=message.old_path,
        session_id=message.session_id,
        access=ACCESS_NAMES.get(message.access),
    )
