"""mshare: fixed-address shared-memory regions from the mshared broker."""

from __future__ import annotations

__version__ = "0.1.0"

from .client import Namespace, Watch, connect
from .errors import BrokerUnavailableError, ForkedError, ProtocolError, SessionLostError
from .records import Attachment, Event, HugePages, Info, SessionInfo, Stat
from .region import PAGE_SIZES, Region

__all__ = [
    "PAGE_SIZES",
    "Attachment",
    "BrokerUnavailableError",
    "Event",
    "ForkedError",
    "HugePages",
    "Info",
    "Namespace",
    "ProtocolError",
    "Region",
    "SessionInfo",
    "SessionLostError",
    "Stat",
    "Watch",
    "connect",
]
