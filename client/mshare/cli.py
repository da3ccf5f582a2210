"""The `mshare` command."""

from __future__ import annotations

import sys


def main() -> int:
    print("mshare: the command line arrives with the operable daemon", file=sys.stderr)
    return 2
