"""The domain's one exception: a refusal that carries its errno and the path it is about."""

from __future__ import annotations

import errno
import os

from mshare.errors import INTERNAL_REASON


class BrokerError(Exception):
    """A request the broker refuses.

    Args:
        errno_value: the errno the client sees (its reason is the errno's name).
        message: what went wrong, for a human; os.strerror(errno_value) if omitted.
        path: the path the error is about, or "".
    """

    def __init__(self, errno_value: int, message: str = "", path: str = "") -> None:
        self.errno = errno_value
        self.message = message or os.strerror(errno_value)
        self.path = path
        super().__init__(f"{self.reason}: {self.message}" + (f": {path}" if path else ""))

    @property
    def reason(self) -> str:
        """The errno name, for example "EEXIST"."""
        return errno.errorcode.get(self.errno, INTERNAL_REASON)

    @classmethod
    def internal(cls) -> BrokerError:
        """What a client learns of a bug: that it happened, not its traceback (that goes to the log)."""
        return cls(errno.EIO, "internal error; the broker's log has the details")

    @classmethod
    def from_os_error(cls, exc: OSError, what: str, path: str = "") -> BrokerError:
        """Wrap a kernel refusal (EMFILE, ENOMEM, ...) met while serving a request."""
        value = exc.errno if exc.errno is not None else errno.EIO
        return cls(value, f"{what}: {os.strerror(value)}", path)
