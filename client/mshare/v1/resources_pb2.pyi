import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_UNSPECIFIED: _ClassVar[EntryKind]
    ENTRY_KIND_DIRECTORY: _ClassVar[EntryKind]
    ENTRY_KIND_REGION: _ClassVar[EntryKind]

class RegionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGION_STATE_UNSPECIFIED: _ClassVar[RegionState]
    REGION_STATE_ACTIVE: _ClassVar[RegionState]
    REGION_STATE_UNLINKED: _ClassVar[RegionState]

class PagePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAGE_POLICY_UNSPECIFIED: _ClassVar[PagePolicy]
    PAGE_POLICY_4K: _ClassVar[PagePolicy]
    PAGE_POLICY_THP: _ClassVar[PagePolicy]
    PAGE_POLICY_HUGETLB_2M: _ClassVar[PagePolicy]
    PAGE_POLICY_HUGETLB_1G: _ClassVar[PagePolicy]

class Access(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_UNSPECIFIED: _ClassVar[Access]
    ACCESS_READ_ONLY: _ClassVar[Access]
    ACCESS_READ_WRITE: _ClassVar[Access]
ENTRY_KIND_UNSPECIFIED: EntryKind
ENTRY_KIND_DIRECTORY: EntryKind
ENTRY_KIND_REGION: EntryKind
REGION_STATE_UNSPECIFIED: RegionState
REGION_STATE_ACTIVE: RegionState
REGION_STATE_UNLINKED: RegionState
PAGE_POLICY_UNSPECIFIED: PagePolicy
PAGE_POLICY_4K: PagePolicy
PAGE_POLICY_THP: PagePolicy
PAGE_POLICY_HUGETLB_2M: PagePolicy
PAGE_POLICY_HUGETLB_1G: PagePolicy
ACCESS_UNSPECIFIED: Access
ACCESS_READ_ONLY: Access
ACCESS_READ_WRITE: Access

class Error(_message.Message):
    __slots__ = ("code", "reason", "message", "path")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    path: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ("uid", "gid", "groups", "pid")
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    uid: int
    gid: int
    groups: _containers.RepeatedScalarFieldContainer[int]
    pid: int
    def __init__(self, uid: _Optional[int] = ..., gid: _Optional[int] = ..., groups: _Optional[_Iterable[int]] = ..., pid: _Optional[int] = ...) -> None: ...

class NamespaceInfo(_message.Message):
    __slots__ = ("name", "alignment_bytes", "arena_start", "arena_size_bytes", "default_page_policy", "page_policies")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    ARENA_START_FIELD_NUMBER: _ClassVar[int]
    ARENA_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PAGE_POLICY_FIELD_NUMBER: _ClassVar[int]
    PAGE_POLICIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    alignment_bytes: int
    arena_start: int
    arena_size_bytes: int
    default_page_policy: PagePolicy
    page_policies: _containers.RepeatedScalarFieldContainer[PagePolicy]
    def __init__(self, name: _Optional[str] = ..., alignment_bytes: _Optional[int] = ..., arena_start: _Optional[int] = ..., arena_size_bytes: _Optional[int] = ..., default_page_policy: _Optional[_Union[PagePolicy, str]] = ..., page_policies: _Optional[_Iterable[_Union[PagePolicy, str]]] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("id", "namespace", "path", "kind", "start", "size_bytes", "mode", "uid", "gid", "page_policy", "attach_count", "state", "create_time", "pagetable_bytes", "pagetable_bytes_4k")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    PAGE_POLICY_FIELD_NUMBER: _ClassVar[int]
    ATTACH_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGETABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGETABLE_BYTES_4K_FIELD_NUMBER: _ClassVar[int]
    id: int
    namespace: str
    path: str
    kind: EntryKind
    start: int
    size_bytes: int
    mode: int
    uid: int
    gid: int
    page_policy: PagePolicy
    attach_count: int
    state: RegionState
    create_time: _timestamp_pb2.Timestamp
    pagetable_bytes: int
    pagetable_bytes_4k: int
    def __init__(self, id: _Optional[int] = ..., namespace: _Optional[str] = ..., path: _Optional[str] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., start: _Optional[int] = ..., size_bytes: _Optional[int] = ..., mode: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., page_policy: _Optional[_Union[PagePolicy, str]] = ..., attach_count: _Optional[int] = ..., state: _Optional[_Union[RegionState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pagetable_bytes: _Optional[int] = ..., pagetable_bytes_4k: _Optional[int] = ...) -> None: ...

class HugePagePool(_message.Message):
    __slots__ = ("page_policy", "page_size_bytes", "total_pages", "free_pages", "reserved_pages")
    PAGE_POLICY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PAGES_FIELD_NUMBER: _ClassVar[int]
    FREE_PAGES_FIELD_NUMBER: _ClassVar[int]
    RESERVED_PAGES_FIELD_NUMBER: _ClassVar[int]
    page_policy: PagePolicy
    page_size_bytes: int
    total_pages: int
    free_pages: int
    reserved_pages: int
    def __init__(self, page_policy: _Optional[_Union[PagePolicy, str]] = ..., page_size_bytes: _Optional[int] = ..., total_pages: _Optional[int] = ..., free_pages: _Optional[int] = ..., reserved_pages: _Optional[int] = ...) -> None: ...

class RegionDescriptor(_message.Message):
    __slots__ = ("region_id", "attachment_id", "namespace", "path", "start", "size_bytes", "page_policy", "access")
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGE_POLICY_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    region_id: int
    attachment_id: int
    namespace: str
    path: str
    start: int
    size_bytes: int
    page_policy: PagePolicy
    access: Access
    def __init__(self, region_id: _Optional[int] = ..., attachment_id: _Optional[int] = ..., namespace: _Optional[str] = ..., path: _Optional[str] = ..., start: _Optional[int] = ..., size_bytes: _Optional[int] = ..., page_policy: _Optional[_Union[PagePolicy, str]] = ..., access: _Optional[_Union[Access, str]] = ...) -> None: ...
