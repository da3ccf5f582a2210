"""The `mshare` command as a user runs it: a real process against a real broker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import mshare

from .conftest import VENV_BIN, BrokerProcess, make_run_dir, spawn

MiB = 1 << 20
Result = subprocess.CompletedProcess[bytes]

#: Runs the CLI after dropping to nobody. Everything, including what argparse and
#: grpc import lazily, is imported while root: the interpreter may live where
#: nobody cannot read.
DROPPED = """
import os, sys
import shutil, grpc._channel, grpc._interceptor, grpc_status.rpc_status
from mshare.cli import main
os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
sys.exit(main(sys.argv[1:]))
"""


def command(run_dir: Path, args: tuple[str, ...] | list[str], as_nobody: bool = False) -> dict[str, Any]:
    argv = [sys.executable, "-c", DROPPED] if as_nobody else [str(VENV_BIN / "mshare")]
    return {"args": [*argv, *args], "cwd": "/", "env": {**os.environ, "MSHARE_RUN_DIR": str(run_dir)}}


def run(broker: BrokerProcess | Path, *args: str, stdin: bytes = b"", as_nobody: bool = False) -> Result:
    run_dir = broker if isinstance(broker, Path) else broker.run_dir
    return subprocess.run(**command(run_dir, args, as_nobody), input=stdin, capture_output=True, timeout=30)


def run_all(run_dir: Path, *commands: list[str]) -> list[Result]:
    """Independent commands at once: each costs an interpreter start, and the suite should stay fast."""
    children = [subprocess.Popen(**command(run_dir, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in commands]
    results = []
    for child in children:
        out, err = child.communicate(timeout=30)
        results.append(subprocess.CompletedProcess(child.args, child.returncode, out, err))
    return results


def ok_all(broker: BrokerProcess, *commands: list[str]) -> list[str]:
    results = run_all(broker.run_dir, *commands)
    for result in results:
        assert (result.returncode, result.stderr) == (0, b""), result
    return [result.stdout.decode() for result in results]


def ok(broker: BrokerProcess, *args: str, stdin: bytes = b"") -> str:
    """stdout of a command that must succeed with nothing on stderr."""
    result = run(broker, *args, stdin=stdin)
    assert (result.returncode, result.stderr) == (0, b""), result
    return result.stdout.decode()


def error_line(result: Result, code: int = 1) -> str:
    """The single stderr line of a command that failed with code."""
    assert result.returncode == code, result
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mshare: "), result.stderr
    return lines[0]


def fails(broker: BrokerProcess, *args: str, stdin: bytes = b"", as_nobody: bool = False) -> str:
    return error_line(run(broker, *args, stdin=stdin, as_nobody=as_nobody))


def test_info_human_and_json(broker: BrokerProcess) -> None:
    out = ok(broker, "info")
    assert "alignment:" in out and "2.0M (2097152 bytes)" in out and "namespaces:" in out
    info = json.loads(ok(broker, "info", "--json"))
    assert info["alignment"] == 2 * MiB and info["namespace"] == "default" and info["namespaces"] == ["default"]
    assert "4k" in info["page_sizes"] and isinstance(info["arena_start"], int) and info["broker_version"]


def test_create_ls_stat_tree(broker: BrokerProcess, ns: mshare.Namespace) -> None:
    assert ok(broker, "mkdir", "-m", "750", "/db") == ""
    line = ok(broker, "create", "/db/sga", "--size", "4M", "--mode", "640")
    st = ns.stat("/db/sga")
    assert (st.size, st.mode, st.attach_count) == (4 * MiB, 0o640, 0)
    assert line.split() == ["-rw-r-----", "root", "root", "4.0M", st.page_size, "0", "ACTIVE", f"{st.start:#x}", "sga"]
    made = json.loads(ok(broker, "create", "/db/log", "--size", "0x200000", "--mode", "0600", "--json"))
    assert (made["size"], made["mode"], made["kind"], made["path"]) == (2 * MiB, "0600", "region", "/db/log")

    top, db, long_db, long_root, listed, text_stat, json_stat, tree, nested = ok_all(
        broker,
        ["ls"],
        ["ls", "/db"],
        ["ls", "-l", "/db"],
        ["ls", "-l", "/"],
        ["ls", "--json", "/db"],
        ["stat", "/db/sga"],
        ["stat", "--json", "/db/sga"],
        ["tree"],
        ["tree", "--json"],
    )
    assert (top, db) == ("db/\n", "log\nsga\n")
    rows = [row.split() for row in long_db.splitlines()]
    assert [row[0] for row in rows] == ["-rw-------", "-rw-r-----"] and rows[1][3] == "4.0M"
    assert long_root.split() == ["drwxr-x---", "root", "root", "-", "-", "-", "-", "-", "db/"]
    entries = json.loads(listed)
    assert [(e["name"], e["size"], e["mode"]) for e in entries] == [("log", 2 * MiB, "0600"), ("sga", 4 * MiB, "0640")]

    fields = dict(line.split(":", 1) for line in text_stat.splitlines())
    assert fields["mode"].strip() == "0640 (-rw-r-----)" and fields["start"].strip() == f"{st.start:#x}"
    assert len(fields) == 14 and fields["size"].strip() == "4194304 (4.0M)"
    assert fields["page tables"].strip() == "0 now, 0 with 4k pages"  # nobody is attached
    as_json = json.loads(json_stat)
    assert as_json["start"] == st.start and as_json["id"] == st.id and as_json["state"] == "ACTIVE"

    lines = tree.splitlines()
    assert lines[0] == "/" and lines[1].endswith("db/") and lines[2].endswith("log  [2.0M]") and lines[3].endswith("sga  [4.0M]")
    assert [child["name"] for child in json.loads(nested)["children"][0]["children"]] == ["log", "sga"]


def test_directory_verbs(broker: BrokerProcess, ns: mshare.Namespace) -> None:
    ok(broker, "mkdir", "-p", "/a/b/c", "/a/b")  # the second already exists: fine with -p
    ns.allocate("/a/r", 2 * MiB)
    chown = [["chown", "65534:root", "/a/b"]] if os.geteuid() == 0 else []  # root only
    ok_all(broker, ["chmod", "700", "/a"], ["mv", "/a/r", "/a/b/r"], ["rmdir", "/a/b/c"], *chown)
    assert (ns.stat("/a").mode, ns.listdir("/a/b")) == (0o700, ["r"])
    if os.geteuid() == 0:
        assert (ns.stat("/a/b").uid, ns.stat("/a/b").gid) == (65534, 0)
    ok(broker, "rm", "/a/b/r")
    assert ns.listdir("/a/b") == []


def test_operation_errors_are_one_line(broker: BrokerProcess, ns: mshare.Namespace) -> None:
    ns.mkdir("/x")
    ns.allocate("/x/r", 2 * MiB)
    expected = {
        ("mkdir", "/x"): "mshare: /x: File exists",
        ("ls", "/nope"): "mshare: /nope: No such file or directory",
        ("rmdir", "/x"): "mshare: /x: Directory not empty",
        ("create", "/x/r", "--size", "2M"): "mshare: /x/r: File exists",
        ("create", "/odd", "--size", "3M"): "mshare: /odd: ",  # the broker's message names the alignment
        ("-n", "nope", "ls"): "mshare: no namespace 'nope'",
    }
    results = run_all(broker.run_dir, *map(list, expected), ["ls", "relative"])
    for line, result in zip(expected.values(), results, strict=False):
        assert error_line(result).startswith(line)
    # What the SDK refuses before asking the broker is a usage error.
    assert error_line(results[-1], code=2) == "mshare: path must be absolute: 'relative'"
    # Every path is tried; one failure makes the exit status 1.
    assert fails(broker, "rm", "/gone", "/x/r") == "mshare: /gone: No such file or directory"
    assert ns.listdir("/x") == []


def test_permission_problems(broker: BrokerProcess, ns: mshare.Namespace) -> None:
    ns.allocate("/secret", 2 * MiB, mode=0o600)
    if os.geteuid() != 0:
        assert fails(broker, "chown", "0", "/secret").startswith("mshare: /secret: ")
        return
    assert fails(broker, "cat", "/secret", as_nobody=True) == "mshare: /secret: Permission denied"
    assert fails(broker, "chown", "65534", "/secret", as_nobody=True).startswith("mshare: /secret: ")


def test_usage_errors_exit_2_with_one_line() -> None:
    run_dir = make_run_dir()  # no broker: argparse refuses first
    commands = [
        [],
        ["frobnicate"],
        ["ls", "--bogus"],
        ["create", "/x"],
        ["create", "/x", "--size", "lots"],
        ["create", "/x", "--size", "2M", "--page-size", "8k"],
        ["chmod", "999", "/x"],
        ["chown", "no-such-user-here", "/x"],
        ["top", "--interval", "0"],
    ]
    try:
        results = run_all(run_dir, *commands)
    finally:
        shutil.rmtree(run_dir)
    for result in results:
        assert result.stdout == b"" and error_line(result, code=2)


def test_write_and_cat_round_trip_binary(broker: BrokerProcess, ns: mshare.Namespace, tmp_path: Path) -> None:
    data = bytes(range(256)) * 16 + b"\0\r\n\xff"
    with ns.create("/data", 2 * MiB) as region:
        assert ok(broker, "write", "/data", "--offset", "4K", stdin=data) == ""
        assert bytes(region.buf[4096 : 4096 + len(data)]) == data  # seen through this process's own mapping
        region.buf[:4] = b"SDK!"
        whole = run(broker, "cat", "/data")
        assert (whole.returncode, whole.stderr, len(whole.stdout)) == (0, b"", 2 * MiB)
        assert whole.stdout == bytes(region.buf)
        part = run(broker, "cat", "/data", "--offset", "4096", "--length", str(len(data)))
        assert (part.returncode, part.stdout) == (0, data)

        assert fails(broker, "write", "/data", "--offset", "2M", stdin=b"x").startswith("mshare: /data: Invalid argument")
        assert fails(broker, "cat", "/data", "--offset", "1M", "--length", "2M").startswith("mshare: /data: Invalid argument")
        # A file too long is refused before anything is written.
        big = tmp_path / "big"
        big.write_bytes(b"\xee" * (2 * MiB + 1))
        with big.open("rb") as stdin:
            result = subprocess.run(**command(broker.run_dir, ["write", "/data"]), stdin=stdin, capture_output=True, timeout=30)
        assert error_line(result).startswith("mshare: /data: Invalid argument")
        assert bytes(region.buf[:4]) == b"SDK!"


def test_sessions_lists_attachments(broker: BrokerProcess, ns: mshare.Namespace) -> None:
    with ns.create("/held", 2 * MiB):
        lines = ok(broker, "sessions").splitlines()
        assert lines[0].split() == ["ID", "UID", "GID", "PID", "NAMESPACE", "ATTACHED", "VERSION", "PATHS"]
        mine = [line.split() for line in lines[1:] if line.split()[3] == str(os.getpid())]
        assert mine and mine[0][4:] == ["default", "1", mshare.__version__, "/held:rw"]
        sessions = json.loads(ok(broker, "sessions", "--json"))
        held = next(s for s in sessions if s["pid"] == os.getpid())
        assert held["attachment_count"] == 1 and held["attachments"][0]["path"] == "/held"
        assert held["attachments"][0]["access"] == "rw" and held["uid"] == os.getuid()


def test_top_once_and_live(broker: BrokerProcess, ns: mshare.Namespace) -> None:
    ns.mkdir("/db")
    with ns.create("/db/sga", 4 * MiB):
        frame = ok(broker, "top", "--once")
        assert "\x1b" not in frame and "/db/sga" in frame and "ACTIVE" in frame
        assert any(line.split()[3:5] == [str(os.getpid()), "default"] for line in frame.splitlines())
        data = json.loads(ok(broker, "top", "--once", "--json"))
        assert [(r["path"], r["attach_count"]) for r in data["regions"]] == [("/db/sga", 1)]
        assert os.getpid() in [s["pid"] for s in data["sessions"]]

    # Not a terminal: frames follow each other without control codes; Ctrl-C ends it with 0.
    top = spawn([str(VENV_BIN / "mshare"), "top", "--interval", "0.1"], env={"MSHARE_RUN_DIR": str(broker.run_dir)})
    assert top.stdout is not None and top.stdout.readline().startswith("mshare top")
    top.send_signal(signal.SIGINT)
    out, err = top.communicate(timeout=10)
    assert (top.returncode, err) == (0, "") and "\x1b" not in out


def test_health(broker: BrokerProcess) -> None:
    assert ok(broker, "health") == "SERVING\n"
    empty = make_run_dir()
    try:
        unreachable, flagged, flag_after = run_all(
            empty,
            ["health", "--timeout", "2"],
            ["--run-dir", str(broker.run_dir), "health"],
            ["ls", "--run-dir", str(broker.run_dir)],
        )
        assert unreachable.stdout == b"UNREACHABLE\n" and str(empty) in error_line(unreachable)
        # --run-dir, before or after the subcommand, wins over $MSHARE_RUN_DIR.
        assert (flagged.returncode, flagged.stdout, flagged.stderr) == (0, b"SERVING\n", b"")
        assert (flag_after.returncode, flag_after.stderr) == (0, b"")
    finally:
        shutil.rmtree(empty)
