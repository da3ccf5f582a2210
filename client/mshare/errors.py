"""The one errno table (errno <-> gRPC status code) and the SDK's exceptions."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from typing import Final

#: gRPC canonical code name of every errno the broker reports; docs/protocol.md
#: shows the same table. ENOTCONN is "no live session"; ENOBUFS is a watcher
#: dropped for falling behind. Anything else the broker reports is INTERNAL.
ERRNO_CODES: Final[Mapping[int, str]] = {
    errno.EEXIST: "ALREADY_EXISTS",
    errno.ENOENT: "NOT_FOUND",
    errno.EACCES: "PERMISSION_DENIED",
    errno.EPERM: "PERMISSION_DENIED",
    errno.EINVAL: "INVALID_ARGUMENT",
    errno.ENAMETOOLONG: "INVALID_ARGUMENT",
    errno.EXDEV: "INVALID_ARGUMENT",
    errno.ENOTEMPTY: "FAILED_PRECONDITION",
    errno.ENOTDIR: "FAILED_PRECONDITION",
    errno.EISDIR: "FAILED_PRECONDITION",
    errno.EBUSY: "FAILED_PRECONDITION",
    errno.EADDRINUSE: "FAILED_PRECONDITION",
    errno.ENOMEM: "RESOURCE_EXHAUSTED",
    errno.EMFILE: "RESOURCE_EXHAUSTED",
    errno.ENOSPC: "RESOURCE_EXHAUSTED",
    errno.EDQUOT: "RESOURCE_EXHAUSTED",
    errno.ENOBUFS: "RESOURCE_EXHAUSTED",
    errno.ENOTCONN: "UNAUTHENTICATED",
}

#: Canonical status code numbers (google.rpc.Code), so the session channel
#: speaks the same codes without importing grpc.
CODE_NUMBERS: Final[Mapping[str, int]] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

#: ErrorInfo.domain of every error the broker reports.
ERROR_DOMAIN: Final = "mshare.v1"

#: The reason of a failure that is the broker's own fault.
INTERNAL_REASON: Final = "EIO"


def code_name(errno_value: int) -> str:
    """The gRPC code name the broker uses for errno_value."""
    return ERRNO_CODES.get(errno_value, "INTERNAL")


def errno_of(reason: str) -> int:
    """The errno number of a reason; EIO for a reason this table does not know."""
    value = getattr(errno, reason, None)
    return value if isinstance(value, int) else errno.EIO


def os_error(reason: str, message: str, path: str = "") -> OSError:
    """The built-in OSError subclass for reason, with errno, message and path set.

    ``OSError(errno.EEXIST, ...)`` constructs a FileExistsError, so callers can
    ``except FileExistsError`` exactly as with ``os.open``.
    """
    value = errno_of(reason)
    text = message or os.strerror(value)
    return OSError(value, text, path) if path else OSError(value, text)


class BrokerUnavailableError(ConnectionError):
    """The broker's socket cannot be reached (or may not be trusted); names the socket."""


class SessionLostError(ConnectionError):
    """The session ended under the caller: the broker exited or dropped the connection."""


class ProtocolError(ConnectionError):
    """The broker sent something this client cannot understand."""


class ForkedError(RuntimeError):
    """A Namespace or Region used in a child after fork(); the child must connect() again."""
