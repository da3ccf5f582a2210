from mshare.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionRequest(_message.Message):
    __slots__ = ("request_id", "hello", "create", "attach", "detach")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    hello: HelloRequest
    create: CreateAndAttachRequest
    attach: AttachRequest
    detach: DetachRequest
    def __init__(self, request_id: _Optional[int] = ..., hello: _Optional[_Union[HelloRequest, _Mapping]] = ..., create: _Optional[_Union[CreateAndAttachRequest, _Mapping]] = ..., attach: _Optional[_Union[AttachRequest, _Mapping]] = ..., detach: _Optional[_Union[DetachRequest, _Mapping]] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("request_id", "error", "hello", "attach")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    error: _resources_pb2.Error
    hello: HelloResponse
    attach: AttachResponse
    def __init__(self, request_id: _Optional[int] = ..., error: _Optional[_Union[_resources_pb2.Error, _Mapping]] = ..., hello: _Optional[_Union[HelloResponse, _Mapping]] = ..., attach: _Optional[_Union[AttachResponse, _Mapping]] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ("min_protocol_version", "max_protocol_version", "namespace", "client_version", "detach_channel")
    MIN_PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DETACH_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    min_protocol_version: int
    max_protocol_version: int
    namespace: str
    client_version: str
    detach_channel: bool
    def __init__(self, min_protocol_version: _Optional[int] = ..., max_protocol_version: _Optional[int] = ..., namespace: _Optional[str] = ..., client_version: _Optional[str] = ..., detach_channel: _Optional[bool] = ...) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ("protocol_version", "broker_version", "session_id", "token", "epoch", "identity", "namespace", "detach_channel")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BROKER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DETACH_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    broker_version: str
    session_id: int
    token: str
    epoch: int
    identity: _resources_pb2.Identity
    namespace: _resources_pb2.NamespaceInfo
    detach_channel: bool
    def __init__(self, protocol_version: _Optional[int] = ..., broker_version: _Optional[str] = ..., session_id: _Optional[int] = ..., token: _Optional[str] = ..., epoch: _Optional[int] = ..., identity: _Optional[_Union[_resources_pb2.Identity, _Mapping]] = ..., namespace: _Optional[_Union[_resources_pb2.NamespaceInfo, _Mapping]] = ..., detach_channel: _Optional[bool] = ...) -> None: ...

class CreateAndAttachRequest(_message.Message):
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

class AttachRequest(_message.Message):
    __slots__ = ("namespace", "path", "region_id", "access")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    path: str
    region_id: int
    access: _resources_pb2.Access
    def __init__(self, namespace: _Optional[str] = ..., path: _Optional[str] = ..., region_id: _Optional[int] = ..., access: _Optional[_Union[_resources_pb2.Access, str]] = ...) -> None: ...

class AttachResponse(_message.Message):
    __slots__ = ("descriptor",)
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    descriptor: _resources_pb2.RegionDescriptor
    def __init__(self, descriptor: _Optional[_Union[_resources_pb2.RegionDescriptor, _Mapping]] = ...) -> None: ...

class DetachRequest(_message.Message):
    __slots__ = ("attachment_ids",)
    ATTACHMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    attachment_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, attachment_ids: _Optional[_Iterable[int]] = ...) -> None: ...
