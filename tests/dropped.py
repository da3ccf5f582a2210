"""Run test code as another uid: import everything while root, then drop privileges for good.

Usage: dropped.py UID GID GROUPS(comma-separated) CODE. CODE runs with `mshare`,
`ctypes`, `mmap`, `os`, `errno`, `fcntl` and `json` in scope and may print
one JSON line for the test to read.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import mmap
import os
import sys

import grpc
import grpc._channel
import grpc._interceptor  # noqa: F401
import grpc_status.rpc_status  # noqa: F401

import mshare
import mshare.client


def drop(uid: int, gid: int, groups: list[int]) -> None:
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    assert os.getresuid() == (uid, uid, uid)


def main() -> None:
    uid, gid, groups, code = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    drop(uid, gid, [int(g) for g in groups.split(",") if g])
    scope = {"mshare": mshare, "ctypes": ctypes, "mmap": mmap, "os": os, "errno": errno, "fcntl": fcntl, "json": json}
    exec(compile(code, "<dropped>", "exec"), scope)


if __name__ == "__main__":
    main()
