from mshare.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATCH_EVENT_KIND_UNSPECIFIED: _ClassVar[WatchEventKind]
    WATCH_EVENT_KIND_EXISTING: _ClassVar[WatchEventKind]
    WATCH_EVENT_KIND_SYNCED: _ClassVar[WatchEventKind]
    WATCH_EVENT_KIND_CREATED: _ClassVar[WatchEventKind]
    WATCH_EVENT_KIND_RENAMED: _ClassVar[WatchEventKind]
    WATCH_EVENT_KIND_UNLINKED: _ClassVar[WatchEventKind]
    WATCH_EVENT_KIND_FREED: _ClassVar[WatchEventKind]
    WATCH_EVENT_KIND_ATTACHED: _ClassVar[WatchEventKind]
    WATCH_EVENT_KIND_DETACHED: _ClassVar[WatchEventKind]
WATCH_EVENT_KIND_UNSPECIFIED: WatchEventKind
WATCH_EVENT_KIND_EXISTING: WatchEventKind
WATCH_EVENT_KIND_SYNCED: WatchEventKind
WATCH_EVENT_KIND_CREATED: WatchEventKind
WATCH_EVENT_KIND_RENAMED: WatchEventKind
WATCH_EVENT_KIND_UNLINKED: WatchEventKind
WATCH_EVENT_KIND_FREED: WatchEventKind
WATCH_EVENT_KIND_ATTACHED: WatchEventKind
WATCH_EVENT_KIND_DETACHED: WatchEventKind

class GetInfoRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("namespace", "broker_version", "epoch", "region_capacity", "huge_page_pools", "thp_shmem_enabled")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    BROKER_VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REGION_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    HUGE_PAGE_POOLS_FIELD_NUMBER: _ClassVar[int]
    THP_SHMEM_ENABLED_FIELD_NUMBER: _ClassVar[int]
    namespace: _resources_pb2.NamespaceInfo
    broker_version: str
    epoch: int
    region_capacity: int
    huge_page_pools: _containers.RepeatedCompositeFieldContainer[_resources_pb2.HugePagePool]
    thp_shmem_enabled: str
    def __init__(self, namespace: _Optional[_Union[_resources_pb2.NamespaceInfo, _Mapping]] = ..., broker_version: _Optional[str] = ..., epoch: _Optional[int] = ..., region_capacity: _Optional[int] = ..., huge_page_pools: _Optional[_Iterable[_Union[_resources_pb2.HugePagePool, _Mapping]]] = ..., thp_shmem_enabled: _Optional[str] = ...) -> None: ...

class ListNamespacesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNamespacesResponse(_message.Message):
    __slots__ = ("namespaces",)
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[_resources_pb2.NamespaceInfo]
    def __init__(self, namespaces: _Optional[_Iterable[_Union[_resources_pb2.NamespaceInfo, _Mapping]]] = ...) -> None: ...

class GetEntryRequest(_message.Message):
    __slots__ = ("namespace", "path")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    path: str
    def __init__(self, namespace: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class GetEntryResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: _resources_pb2.Entry
    def __init__(self, entry: _Optional[_Union[_resources_pb2.Entry, _Mapping]] = ...) -> None: ...

class ListEntriesRequest(_message.Message):
    __slots__ = ("namespace", "path", "page_size", "page_token")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    path: str
    page_size: int
    page_token: str
    def __init__(self, namespace: _Optional[str] = ..., path: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Entry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[_resources_pb2.Entry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateDirectoryRequest(_message.Message):
    __slots__ = ("namespace", "path", "mode")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    path: str
    mode: int
    def __init__(self, namespace: _Optional[str] = ..., path: _Optional[str] = ..., mode: _Optional[int] = ...) -> None: ...

class CreateDirectoryResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: _resources_pb2.Entry
    def __init__(self, entry: _Optional[_Union[_resources_pb2.Entry, _Mapping]] = ...) -> None: ...

class DeleteDirectoryRequest(_message.Message):
    __slots__ = ("namespace", "path")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    path: str
    def __init__(self, namespace: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class DeleteDirectoryResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateRegionRequest(_message.Message):
    __slots__ = ("namespace", "path", "size_bytes", "mode", "start", "page_policy")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    PAGE_POLICY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    path: str
    size_bytes: int
    mode: int
    start: int
    page_policy: _resources_pb2.PagePolicy
    def __init__(self, namespace: _Optional[str] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., mode: _Optional[int] = ..., start: _Optional[int] = ..., page_policy: _Optional[_Union[_resources_pb2.PagePolicy, str]] = ...) -> None: ...

class CreateRegionResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: _resources_pb2.Entry
    def __init__(self, entry: _Optional[_Union[_resources_pb2.Entry, _Mapping]] = ...) -> None: ...

class RenameEntryRequest(_message.Message):
    __slots__ = ("namespace", "source_path", "destination_namespace", "destination_path")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PATH_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    source_path: str
    destination_namespace: str
    destination_path: str
    def __init__(self, namespace: _Optional[str] = ..., source_path: _Optional[str] = ..., destination_namespace: _Optional[str] = ..., destination_path: _Optional[str] = ...) -> None: ...

class RenameEntryResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: _resources_pb2.Entry
    def __init__(self, entry: _Optional[_Union[_resources_pb2.Entry, _Mapping]] = ...) -> None: ...

class SetModeRequest(_message.Message):
    __slots__ = ("namespace", "path", "mode")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    path: str
    mode: int
    def __init__(self, namespace: _Optional[str] = ..., path: _Optional[str] = ..., mode: _Optional[int] = ...) -> None: ...

class SetModeResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: _resources_pb2.Entry
    def __init__(self, entry: _Optional[_Union[_resources_pb2.Entry, _Mapping]] = ...) -> None: ...

class SetOwnerRequest(_message.Message):
    __slots__ = ("namespace", "path", "uid", "gid")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    path: str
    uid: int
    gid: int
    def __init__(self, namespace: _Optional[str] = ..., path: _Optional[str] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ...) -> None: ...

class SetOwnerResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: _resources_pb2.Entry
    def __init__(self, entry: _Optional[_Union[_resources_pb2.Entry, _Mapping]] = ...) -> None: ...

class UnlinkRegionRequest(_message.Message):
    __slots__ = ("namespace", "path")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    path: str
    def __init__(self, namespace: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class UnlinkRegionResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: _resources_pb2.Entry
    def __init__(self, entry: _Optional[_Union[_resources_pb2.Entry, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionInfo, _Mapping]]] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("id", "identity", "namespace", "attachments", "client_version", "attachment_count")
    ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    id: int
    identity: _resources_pb2.Identity
    namespace: str
    attachments: _containers.RepeatedCompositeFieldContainer[AttachmentInfo]
    client_version: str
    attachment_count: int
    def __init__(self, id: _Optional[int] = ..., identity: _Optional[_Union[_resources_pb2.Identity, _Mapping]] = ..., namespace: _Optional[str] = ..., attachments: _Optional[_Iterable[_Union[AttachmentInfo, _Mapping]]] = ..., client_version: _Optional[str] = ..., attachment_count: _Optional[int] = ...) -> None: ...

class AttachmentInfo(_message.Message):
    __slots__ = ("id", "region_id", "namespace", "path", "access")
    ID_FIELD_NUMBER: _ClassVar[int]
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    id: int
    region_id: int
    namespace: str
    path: str
    access: _resources_pb2.Access
    def __init__(self, id: _Optional[int] = ..., region_id: _Optional[int] = ..., namespace: _Optional[str] = ..., path: _Optional[str] = ..., access: _Optional[_Union[_resources_pb2.Access, str]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("namespace", "path", "recursive")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    path: str
    recursive: bool
    def __init__(self, namespace: _Optional[str] = ..., path: _Optional[str] = ..., recursive: _Optional[bool] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("kind", "namespace", "path", "old_path", "entry", "session_id", "access")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OLD_PATH_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    kind: WatchEventKind
    namespace: str
    path: str
    old_path: str
    entry: _resources_pb2.Entry
    session_id: int
    access: _resources_pb2.Access
    def __init__(self, kind: _Optional[_Union[WatchEventKind, str]] = ..., namespace: _Optional[str] = ..., path: _Optional[str] = ..., old_path: _Optional[str] = ..., entry: _Optional[_Union[_resources_pb2.Entry, _Mapping]] = ..., session_id: _Optional[int] = ..., access: _Optional[_Union[_resources_pb2.Access, str]] = ...) -> None: ...
