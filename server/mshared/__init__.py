"""mshared: the mshare broker daemon."""

from __future__ import annotations

from mshare import __version__

__all__ = ["__version__"]
