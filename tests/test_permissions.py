"""POSIX permissions on kernel-verified identities: a child that really runs as uid 65534."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from typing import Any

import pytest

import mshare

from .conftest import ROOT, BrokerProcess, as_user, spawn

MiB = 1 << 20
NOBODY = 65534
GROUP = 4321  # a supplementary group the child is given; needs no /etc/group entry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another uid")

#: Helpers the child code uses: attempt() records the errno (or None) of a call.
PRELUDE = """
out = {}
def attempt(name, call):
    try:
        result = call()
        out[name] = None
        return result
    except OSError as exc:
        out[name] = exc.errno
ns = mshare.connect()
"""


def start_as_nobody(broker: BrokerProcess, code: str) -> subprocess.Popen[str]:
    """run_as() in the background, with a pipe to its stdin for the code to wait on."""
    return spawn(
        [
            sys.executable,
            str(ROOT / "tests" / "dropped.py"),
            str(NOBODY),
            str(NOBODY),
            "",
            PRELUDE + code + "\nprint(json.dumps(out))\n",
        ],
        {"MSHARE_RUN_DIR": str(broker.run_dir)},
        stdin=subprocess.PIPE,
        cwd="/",
    )


def run_as(broker: BrokerProcess, code: str, groups: tuple[int, ...] = ()) -> dict[str, Any]:
    result = as_user(PRELUDE + code + "\nprint(json.dumps(out))\n", broker.run_dir, NOBODY, NOBODY, groups)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mode_bits_deny(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    ns.mkdir("/locked", 0o755)
    ns.create("/secret", size=2 * MiB, mode=0o600).close()
    ns.create("/shared", size=2 * MiB, mode=0o644).close()
    ns.mkdir("/hidden", 0o700)
    ns.create("/hidden/inside", size=2 * MiB, mode=0o666).close()
    ns.mkdir("/unlisted", 0o711)
    ns.create("/unlisted/known", size=2 * MiB, mode=0o644).close()
    out = run_as(
        broker,
        """
attempt("create_in_0755", lambda: ns.create("/locked/mine", size=2 << 20))
attempt("mkdir_in_0755", lambda: ns.mkdir("/locked/d"))
attempt("open_0600", lambda: ns.open("/secret", readonly=True))
attempt("open_rw_0644", lambda: ns.open("/shared"))
r = attempt("open_ro_0644", lambda: ns.open("/shared", readonly=True))
attempt("search_0700", lambda: ns.open("/hidden/inside", readonly=True))
attempt("stat_through_0700", lambda: ns.stat("/hidden/inside"))
attempt("list_0711", lambda: ns.listdir("/unlisted"))
attempt("stat_in_0711", lambda: ns.stat("/unlisted/known"))
attempt("chmod_not_owner", lambda: ns.chmod("/shared", 0o666))
attempt("rename_into_0755", lambda: ns.rename("/shared", "/locked/shared"))
""",
    )
    assert out == {
        "create_in_0755": errno.EACCES,
        "mkdir_in_0755": errno.EACCES,
        "open_0600": errno.EACCES,
        "open_rw_0644": errno.EACCES,
        "open_ro_0644": None,
        "search_0700": errno.EACCES,
        "stat_through_0700": errno.EACCES,
        "list_0711": errno.EACCES,
        "stat_in_0711": None,
        "chmod_not_owner": errno.EPERM,
        "rename_into_0755": errno.EACCES,
    }
    assert ns.listdir("/locked") == []


def test_sticky_root_protects_other_users_entries(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    ns.create("/roots", size=2 * MiB, mode=0o666).close()
    out = run_as(
        broker,
        """
attempt("unlink_root_region", lambda: ns.unlink("/roots"))
attempt("rename_root_region", lambda: ns.rename("/roots", "/taken"))
attempt("create_own", lambda: ns.create("/nobodys", size=2 << 20).close())
attempt("chmod_own", lambda: ns.chmod("/nobodys", 0o640))
attempt("chown_own", lambda: ns.chown("/nobodys", 65534, 65534))
out["owner"] = [ns.stat("/nobodys").uid, ns.stat("/nobodys").gid, ns.stat("/nobodys").mode]
attempt("rename_own", lambda: ns.rename("/nobodys", "/nobodys2"))
attempt("unlink_own", lambda: ns.unlink("/nobodys2"))
""",
    )
    assert out == {
        "unlink_root_region": errno.EPERM,
        "rename_root_region": errno.EPERM,
        "create_own": None,
        "chmod_own": None,
        "chown_own": errno.EPERM,  # chown is root's alone
        "owner": [NOBODY, NOBODY, 0o640],
        "rename_own": None,
        "unlink_own": None,
    }
    assert ns.stat("/roots").attach_count == 0


def test_root_may_remove_anyones_entry_and_chown(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    run_as(broker, 'ns.create("/theirs", size=2 << 20, mode=0o600).close()')
    assert ns.stat("/theirs").uid == NOBODY
    ns.chown("/theirs", 0, GROUP)
    assert (ns.stat("/theirs").uid, ns.stat("/theirs").gid) == (0, GROUP)
    ns.unlink("/theirs")


def test_group_membership_allows(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    ns.mkdir("/team", 0o770)
    ns.chown("/team", 0, GROUP)
    ns.create("/team/data", size=2 * MiB, mode=0o640).close()
    ns.chown("/team/data", 0, GROUP)
    code = """
r = attempt("open_ro", lambda: ns.open("/team/data", readonly=True))
attempt("open_rw", lambda: ns.open("/team/data"))
attempt("create", lambda: ns.create("/team/new", size=2 << 20).close())
"""
    assert run_as(broker, code, groups=(GROUP,)) == {"open_ro": None, "open_rw": errno.EACCES, "create": None}
    assert ns.stat("/team/new").uid == NOBODY
    assert run_as(broker, code) == {"open_ro": errno.EACCES, "open_rw": errno.EACCES, "create": errno.EACCES}


READ_ONLY_PROBES = """
r = ns.open("/public", readonly=True)
out["buf_readonly"] = r.buf.readonly
try:
    r.buf[0] = 1
    out["buf_write"] = "written"
except TypeError:
    out["buf_write"] = "TypeError"
out["text"] = bytes(r.buf[:5]).decode()
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
rc = libc.mprotect(r.start, r.size, mmap.PROT_READ | mmap.PROT_WRITE)
out["mprotect"] = ctypes.get_errno() if rc else None
attempt("mmap_writable", lambda: mmap.mmap(r.fileno(), r.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE))
attempt("reopen_rdwr", lambda: os.open(f"/proc/self/fd/{r.fileno()}", os.O_RDWR))
attempt("ftruncate", lambda: os.ftruncate(r.fileno(), 0))
attempt("write", lambda: os.pwrite(r.fileno(), b"x", 0))
out["flags"] = fcntl.fcntl(r.fileno(), fcntl.F_GETFL) & os.O_ACCMODE
"""


def test_read_only_attachment_cannot_write(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    with ns.create("/public", size=2 * MiB, mode=0o644) as region:
        region.buf[:5] = b"hello"
        out = run_as(broker, READ_ONLY_PROBES)
        assert out["buf_readonly"] is True and out["buf_write"] == "TypeError" and out["text"] == "hello"
        assert out["mprotect"] == errno.EACCES
        assert out["mmap_writable"] == errno.EACCES
        assert out["reopen_rdwr"] == errno.EACCES  # the memfd is 0600 and owned by the broker's uid
        assert out["ftruncate"] in (errno.EINVAL, errno.EBADF)
        assert out["write"] == errno.EBADF
        assert out["flags"] == os.O_RDONLY
        assert bytes(region.buf[:5]) == b"hello"


def test_chmod_and_unlink_never_revoke_a_mapping(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    watcher = ns.create("/revocable", size=2 * MiB, mode=0o666)
    code = """
import sys
r = ns.open("/revocable")
print("mapped", flush=True)
sys.stdin.readline()
r.buf[0] = 99
out["after"] = r.buf[0]
"""
    child = start_as_nobody(broker, code)
    assert child.stdout is not None and child.stdout.readline().strip() == "mapped"
    ns.chmod("/revocable", 0o600)
    ns.chown("/revocable", 0, 0)
    ns.unlink("/revocable")
    out, err = child.communicate("\n", timeout=30)
    assert child.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"after": 99}
    assert watcher.buf[0] == 99
    watcher.close()


def test_a_repeated_open_is_checked_again_after_chmod(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    """The same open again skips the parse, never the permission check: chmod refuses the next one."""
    ns.allocate("/gate", size=2 * MiB, mode=0o666)
    code = """
import sys
for _ in range(3):
    with ns.open("/gate"):
        pass
print("opened", flush=True)
sys.stdin.readline()
try:
    ns.open("/gate")
except PermissionError:
    out["after"] = "EACCES"
"""
    child = start_as_nobody(broker, code)
    assert child.stdout is not None and child.stdout.readline().strip() == "opened"
    ns.chmod("/gate", 0o600)
    out, err = child.communicate("\n", timeout=30)
    assert child.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"after": "EACCES"}


def test_identity_comes_from_the_kernel(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    out = run_as(
        broker,
        """
out["me"] = [ns.uid, ns.gid]
s = [x for x in ns.sessions() if x.id == ns.session_id][0]
out["seen"] = [s.uid, s.gid, list(s.groups), s.pid == os.getpid()]
""",
        groups=(GROUP, 777),
    )
    assert out == {"me": [NOBODY, NOBODY], "seen": [NOBODY, NOBODY, [777, GROUP], True]}


def test_other_users_attachments_are_counted_not_listed(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    ns.mkdir("/private-dir", 0o700)
    with ns.create("/private-dir/secret-name", size=2 * MiB):
        out = run_as(
            broker,
            """
mine = ns.create("/visible", size=2 << 20)
for s in ns.sessions():
    out[str(s.uid)] = [s.attachment_count, [a.path for a in s.attachments]]
""",
        )
        assert out == {"0": [1, []], str(NOBODY): [1, ["/visible"]]}
        root_view = {s.uid: s for s in ns.sessions()}[0]
        assert [a.path for a in root_view.attachments] == ["/private-dir/secret-name"]
