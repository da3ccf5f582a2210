"""Domain values <-> mshare.v1 messages, shared by the session channel and the gRPC servicer."""

from __future__ import annotations

import errno
from typing import Final

from mshare.v1 import broker_service_pb2, resources_pb2, session_pb2

from .broker import Broker, Namespace
from .errors import BrokerError
from .pages import HugePagePool
from .records import EntryView, Handoff
from .regions import Access, PagePolicy, State
from .tree import Credentials
from .watch import Event, EventKind

_POLICIES: Final[dict[PagePolicy, resources_pb2.PagePolicy]] = {
    PagePolicy.SMALL: resources_pb2.PAGE_POLICY_4K,
    PagePolicy.THP: resources_pb2.PAGE_POLICY_THP,
    PagePolicy.HUGETLB_2M: resources_pb2.PAGE_POLICY_HUGETLB_2M,
    PagePolicy.HUGETLB_1G: resources_pb2.PAGE_POLICY_HUGETLB_1G,
}
_POLICIES_BACK: Final[dict[int, PagePolicy]] = {number: policy for policy, number in _POLICIES.items()}
_ACCESS: Final[dict[Access, resources_pb2.Access]] = {
    Access.READ_ONLY: resources_pb2.ACCESS_READ_ONLY,
    Access.READ_WRITE: resources_pb2.ACCESS_READ_WRITE,
}
ACCESS_BY_NUMBER: Final[dict[int, Access]] = {number: access for access, number in _ACCESS.items()}
_STATES: Final = {State.ACTIVE: resources_pb2.REGION_STATE_ACTIVE, State.UNLINKED: resources_pb2.REGION_STATE_UNLINKED}


def policy_from_proto(number: int) -> PagePolicy | None:
    """None for PAGE_POLICY_UNSPECIFIED (the namespace's default); EINVAL for a number we do not know."""
    if number == resources_pb2.PAGE_POLICY_UNSPECIFIED:
        return None
    try:
        return _POLICIES_BACK[number]
    except KeyError:
        raise BrokerError(errno.EINVAL, f"unknown page policy {number}") from None


def create_args(
    message: broker_service_pb2.CreateRegionRequest | session_pb2.CreateAndAttachRequest,
) -> tuple[str, str, int, int, int, PagePolicy | None]:
    """create_region's arguments from either request that creates a region (they share their fields)."""
    return (
        message.namespace,
        message.path,
        message.size_bytes,
        message.mode,
        message.start,
        policy_from_proto(message.page_policy),
    )


def access_from_proto(number: int) -> Access:
    """The access an attach asks for; EINVAL for none (ACCESS_UNSPECIFIED) or an unknown one."""
    access = ACCESS_BY_NUMBER.get(number)
    if access is None:
        raise BrokerError(errno.EINVAL, f"unknown access mode {number}" if number else "attach needs an access mode")
    return access


def access_to_proto(access: Access) -> resources_pb2.Access:
    return _ACCESS[access]


def identity(creds: Credentials) -> resources_pb2.Identity:
    return resources_pb2.Identity(uid=creds.uid, gid=creds.gid, groups=sorted(creds.groups), pid=creds.pid)


def namespace_info(ns: Namespace, broker: Broker) -> resources_pb2.NamespaceInfo:
    return resources_pb2.NamespaceInfo(
        name=ns.name,
        alignment_bytes=ns.alignment,
        arena_start=broker.space.arena_start,
        arena_size_bytes=broker.space.arena_size,
        default_page_policy=_POLICIES[ns.default_policy],
        page_policies=[_POLICIES[p] for p in PagePolicy if p in broker.policies],
    )


def huge_page_pool(pool: HugePagePool) -> resources_pb2.HugePagePool:
    return resources_pb2.HugePagePool(
        page_policy=_POLICIES[pool.policy],
        page_size_bytes=pool.page_bytes,
        total_pages=pool.total,
        free_pages=pool.free,
        reserved_pages=pool.reserved,
    )


def fill_descriptor(message: resources_pb2.RegionDescriptor, handoff: Handoff) -> None:
    """Set a descriptor's fields in place: on the attach path, half the cost of building nested messages."""
    message.region_id = handoff.region_id
    message.attachment_id = handoff.attachment_id
    message.namespace = handoff.namespace
    message.path = handoff.path
    message.start = handoff.start
    message.size_bytes = handoff.size
    message.page_policy = _POLICIES[handoff.policy]
    message.access = _ACCESS[handoff.access]


def entry(view: EntryView) -> resources_pb2.Entry:
    message = resources_pb2.Entry(
        id=view.id,
        namespace=view.namespace,
        path=view.path,
        kind=resources_pb2.ENTRY_KIND_DIRECTORY if view.is_directory else resources_pb2.ENTRY_KIND_REGION,
        start=view.start,
        size_bytes=view.size,
        mode=view.mode,
        uid=view.uid,
        gid=view.gid,
        attach_count=view.attach_count,
        pagetable_bytes=view.pagetable_bytes,
        pagetable_bytes_4k=view.pagetable_bytes_4k,
    )
    if view.policy is not None:
        message.page_policy = _POLICIES[view.policy]
    if view.state is not None:
        message.state = _STATES[view.state]
    message.create_time.FromNanoseconds(view.created_ns)
    return message


_EVENT_KINDS: Final[dict[EventKind, broker_service_pb2.WatchEventKind]] = {
    EventKind.EXISTING: broker_service_pb2.WATCH_EVENT_KIND_EXISTING,
    EventKind.SYNCED: broker_service_pb2.WATCH_EVENT_KIND_SYNCED,
    EventKind.CREATED: broker_service_pb2.WATCH_EVENT_KIND_CREATED,
    EventKind.RENAMED: broker_service_pb2.WATCH_EVENT_KIND_RENAMED,
    EventKind.UNLINKED: broker_service_pb2.WATCH_EVENT_KIND_UNLINKED,
    EventKind.FREED: broker_service_pb2.WATCH_EVENT_KIND_FREED,
    EventKind.ATTACHED: broker_service_pb2.WATCH_EVENT_KIND_ATTACHED,
    EventKind.DETACHED: broker_service_pb2.WATCH_EVENT_KIND_DETACHED,
}


def watch_event(event: Event) -> broker_service_pb2.WatchResponse:
    message = broker_service_pb2.WatchResponse(
        kind=_EVENT_KINDS[event.kind],
        namespace=event.namespace,
        path=event.path,
        old_path=event.old_path,
        session_id=event.session_id,
    )
    if event.entry is not None:
        message.entry.CopyFrom(entry(event.entry))
    if event.access is not None:
        message.access = _ACCESS[event.access]
    return message
