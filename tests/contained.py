"""Run mshared as another uid, like a container's USER: import everything while root, then drop privileges for good.

Usage: contained.py UID GID [MSHARED ARGUMENTS...]. The interpreter may live
where the unprivileged uid cannot read (/root), so every module the daemon
would import later is imported here first; tests/dropped.py does the same for
client code.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  # socket.getaddrinfo() encodes the metrics host with it, lazily
import os
import sys

import mshared.__main__


def drop(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    assert os.getresuid() == (uid, uid, uid) and os.getresgid() == (gid, gid, gid)


def main() -> int:
    uid, gid = int(sys.argv[1]), int(sys.argv[2])
    drop(uid, gid)
    return mshared.__main__.main(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
