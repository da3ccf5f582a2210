"""The gRPC servicer: proto <-> domain and errno -> status, nothing else."""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from mshare import __version__
from mshare.errors import CODE_NUMBERS, ERROR_DOMAIN, code_name
from mshare.v1 import broker_service_pb2 as pb
from mshare.v1 import broker_service_pb2_grpc

from . import convert, pages
from .broker import Broker
from .errors import BrokerError
from .records import SessionRecord
from .watch import Overflow

log = logging.getLogger(__name__)

#: Full name of the service, from the descriptor, for health checking and reflection.
SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["BrokerService"].full_name

#: How often a watch stream checks that its client is still there.
WATCH_POLL: Final = 1.0

#: Metadata keys every call carries: the session token, and the id of the last
#: request the client sent on the session channel (so the call sees its detaches).
TOKEN_KEY: Final = "x-mshare-session"
AFTER_KEY: Final = "x-mshare-after"

#: How long a call waits for the session loop to catch up with the caller's own
#: earlier requests. The loop never blocks, so a real wait is microseconds; the
#: bound keeps a call naming a request never sent from holding a worker for long.
CATCH_UP_TIMEOUT: Final = 1.0

Request = TypeVar("Request")
Response = TypeVar("Response")


def error_status(exc: BrokerError) -> grpc.Status:
    """A BrokerError as a canonical status with google.rpc.ErrorInfo (reason = errno name)."""
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata={"path": exc.path} if exc.path else {})
    detail = any_pb2.Any()
    detail.Pack(info)
    code = CODE_NUMBERS[code_name(exc.errno)]
    return rpc_status.to_status(status_pb2.Status(code=code, message=exc.message, details=[detail]))


def failure_status(exc: Exception, method: str) -> grpc.Status:
    """The status a failed call ends with: the refusal's errno, or INTERNAL (logged) for a bug."""
    if isinstance(exc, BrokerError):
        return error_status(exc)
    log.exception("internal error in %s", method)
    return error_status(BrokerError.internal())


def _rpc(
    method: Callable[[BrokerServicer, Any, SessionRecord], Response],
) -> Callable[[BrokerServicer, Any, grpc.ServicerContext], Response]:
    """Bind the call to its session and translate every failure, in one place."""

    @functools.wraps(method)
    def call(self: BrokerServicer, request: Any, context: grpc.ServicerContext) -> Response:
        try:
            return method(self, request, self._session(context))
        except Exception as exc:
            status = failure_status(exc, method.__name__)
        # abort_with_status raises; it must stay outside the except clause above.
        context.abort_with_status(status)
        raise AssertionError("unreachable")

    return call


def _stream(
    method: Callable[[BrokerServicer, Any, grpc.ServicerContext, SessionRecord], Iterator[Response]],
) -> Callable[[BrokerServicer, Any, grpc.ServicerContext], Iterator[Response]]:
    """_rpc for server-streaming calls: errors before or between messages end the stream with a status."""

    @functools.wraps(method)
    def call(self: BrokerServicer, request: Any, context: grpc.ServicerContext) -> Iterator[Response]:
        try:
            yield from method(self, request, context, self._session(context))
            return
        except Exception as exc:
            status = failure_status(exc, method.__name__)
        context.abort_with_status(status)

    return call


class BrokerServicer(broker_service_pb2_grpc.BrokerServiceServicer):
    """mshare.v1.BrokerService over a Broker."""

    def __init__(self, broker: Broker, region_capacity: Callable[[], int]) -> None:
        self.broker = broker
        self._region_capacity = region_capacity

    def _session(self, context: grpc.ServicerContext) -> SessionRecord:
        metadata = dict(context.invocation_metadata())
        session = self.broker.session_for_token(str(metadata.get(TOKEN_KEY, "")))
        if session is None:
            raise BrokerError(errno.ENOTCONN, f"no live session: every call needs the {TOKEN_KEY} metadata of an open session")
        try:
            after = int(metadata.get(AFTER_KEY, 0))
        except ValueError:
            raise BrokerError(errno.EINVAL, f"{AFTER_KEY} must be a request id") from None
        if after and not session.wait_seen(after, CATCH_UP_TIMEOUT):
            raise BrokerError(errno.EBUSY, "the session channel has not caught up with this call")
        return session

    @_rpc
    def GetInfo(self, request: pb.GetInfoRequest, session: SessionRecord) -> pb.GetInfoResponse:
        ns = self.broker.namespace(request.namespace or session.namespace)
        return pb.GetInfoResponse(
            namespace=convert.namespace_info(ns, self.broker),
            broker_version=__version__,
            epoch=self.broker.epoch,
            region_capacity=self._region_capacity(),
            huge_page_pools=[convert.huge_page_pool(p) for p in pages.pools()],
            thp_shmem_enabled=pages.thp_setting(),
        )

    @_rpc
    def ListNamespaces(self, request: pb.ListNamespacesRequest, session: SessionRecord) -> pb.ListNamespacesResponse:
        return pb.ListNamespacesResponse(namespaces=[convert.namespace_info(ns, self.broker) for ns in self.broker.namespaces()])

    @_rpc
    def GetEntry(self, request: pb.GetEntryRequest, session: SessionRecord) -> pb.GetEntryResponse:
        view = self.broker.stat(session.creds, request.namespace or session.namespace, request.path)
        return pb.GetEntryResponse(entry=convert.entry(view))

    @_rpc
    def ListEntries(self, request: pb.ListEntriesRequest, session: SessionRecord) -> pb.ListEntriesResponse:
        views, token = self.broker.listdir(
            session.creds, request.namespace or session.namespace, request.path, request.page_size, request.page_token
        )
        return pb.ListEntriesResponse(entries=[convert.entry(v) for v in views], next_page_token=token)

    @_rpc
    def CreateDirectory(self, request: pb.CreateDirectoryRequest, session: SessionRecord) -> pb.CreateDirectoryResponse:
        view = self.broker.mkdir(session.creds, request.namespace or session.namespace, request.path, request.mode)
        return pb.CreateDirectoryResponse(entry=convert.entry(view))

    @_rpc
    def DeleteDirectory(self, request: pb.DeleteDirectoryRequest, session: SessionRecord) -> pb.DeleteDirectoryResponse:
        self.broker.rmdir(session.creds, request.namespace or session.namespace, request.path)
        return pb.DeleteDirectoryResponse()

    @_rpc
    def CreateRegion(self, request: pb.CreateRegionRequest, session: SessionRecord) -> pb.CreateRegionResponse:
        view, _ = self.broker.create_region(session, *convert.create_args(request), attach=False)
        return pb.CreateRegionResponse(entry=convert.entry(view))

    @_rpc
    def RenameEntry(self, request: pb.RenameEntryRequest, session: SessionRecord) -> pb.RenameEntryResponse:
        view = self.broker.rename(
            session.creds,
            request.namespace or session.namespace,
            request.source_path,
            request.destination_namespace,
            request.destination_path,
        )
        return pb.RenameEntryResponse(entry=convert.entry(view))

    @_rpc
    def SetMode(self, request: pb.SetModeRequest, session: SessionRecord) -> pb.SetModeResponse:
        view = self.broker.chmod(session.creds, request.namespace or session.namespace, request.path, request.mode)
        return pb.SetModeResponse(entry=convert.entry(view))

    @_rpc
    def SetOwner(self, request: pb.SetOwnerRequest, session: SessionRecord) -> pb.SetOwnerResponse:
        view = self.broker.chown(session.creds, request.namespace or session.namespace, request.path, request.uid, request.gid)
        return pb.SetOwnerResponse(entry=convert.entry(view))

    @_rpc
    def UnlinkRegion(self, request: pb.UnlinkRegionRequest, session: SessionRecord) -> pb.UnlinkRegionResponse:
        view = self.broker.unlink(session.creds, request.namespace or session.namespace, request.path)
        return pb.UnlinkRegionResponse(entry=convert.entry(view))

    @_rpc
    def ListSessions(self, request: pb.ListSessionsRequest, session: SessionRecord) -> pb.ListSessionsResponse:
        """Every session; what others have attached is shown only to root and to the same uid."""
        creds = session.creds
        return pb.ListSessionsResponse(
            sessions=[
                pb.SessionInfo(
                    id=s.id,
                    identity=convert.identity(s.creds),
                    namespace=s.namespace,
                    client_version=s.client_version,
                    attachment_count=len(s.attachments),
                    attachments=[
                        pb.AttachmentInfo(
                            id=a.id,
                            region_id=a.region_id,
                            namespace=a.namespace,
                            path=a.path,
                            access=convert.access_to_proto(a.access),
                        )
                        for a in s.attachments
                    ]
                    if creds.is_root or creds.uid == s.creds.uid
                    else [],
                )
                for s in self.broker.sessions()
            ]
        )

    @_stream
    def Watch(
        self, request: pb.WatchRequest, context: grpc.ServicerContext, session: SessionRecord
    ) -> Iterator[pb.WatchResponse]:
        watcher = self.broker.watch(session, request.namespace, request.path, request.recursive)
        context.add_callback(lambda: self.broker.unwatch(watcher))
        try:
            while context.is_active():
                try:
                    event = watcher.pop(WATCH_POLL)
                except Overflow as exc:
                    raise BrokerError(errno.ENOBUFS, f"{exc}; watch again to resynchronise", request.path) from None
                if event is not None:
                    yield convert.watch_event(event)
                elif watcher.closed:
                    return  # the session or the broker ended
        finally:
            self.broker.unwatch(watcher)
