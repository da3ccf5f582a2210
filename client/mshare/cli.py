"""The `mshare` command: inspect and manage a broker's namespaces, regions and sessions from the shell."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import grp
import json
import os
import pwd
import re
import stat as stat_module
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import PAGE_SIZES, Namespace, SessionInfo, Stat, __version__, connect
from .client import GRPC_SOCKET, find_run_dir

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it

#: Home the cursor and clear the screen: top redraws in place, on a terminal only.
CLEAR: Final = "\x1b[H\x1b[2J"

#: Container probes call health often and give up after about a second.
HEALTH_TIMEOUT: Final = 1.0

_SIZE: Final = re.compile(r"(0x[0-9a-f]+|[0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"mshare: {message} (see '{self.prog} --help')\n")


# -- arguments: a ValueError becomes argparse's one-line "invalid <name> value" -------------


def size(text: str) -> int:
    """Bytes: 4096, 0x200000, 2M, 1.5G, 2MiB (K/M/G/T are KiB/MiB/GiB/TiB)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    number, unit = match.groups()
    scale = 1024 ** "_KMGT".index(unit.upper() or "_")
    try:
        value = int(number, 16) * scale if number[:2].lower() == "0x" else Decimal(number) * scale
    except InvalidOperation:
        raise ValueError(text) from None
    if value != int(value):
        raise ValueError(text)
    return int(value)


def octal(text: str) -> int:
    mode = int(text, 8)
    if not 0 <= mode <= 0o7777:
        raise ValueError(text)
    return mode


def seconds(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise ValueError(text)
    return value


def owner(text: str) -> tuple[int, int]:
    """UID[:GID], names or numbers; an empty part or -1 keeps the current value."""
    user, _, group = text.partition(":")
    try:
        uid = -1 if user in ("", "-1") else int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        gid = -1 if group in ("", "-1") else int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown user or group in {text!r}") from None
    return uid, gid


# -- output --------------------------------------------------------------------------------


def human(n: int) -> str:
    """Like ls -h: 512, 4.0K, 2.0M, 1.0G."""
    if n < 1024:
        return str(n)
    value, units = n / 1024, "KMGTPE"
    while round(value, 1) >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:.1f}{units[0]}"


@functools.cache
def name_of(number: int, group: bool = False) -> str:
    """The user (or group) name of a number, or the number when it has none here."""
    try:
        return grp.getgrgid(number).gr_name if group else pwd.getpwuid(number).pw_name
    except KeyError:
        return str(number)


def table(rows: list[list[str]], header: list[str] | None = None, right: frozenset[int] = frozenset()) -> list[str]:
    """Lines with aligned columns; the columns in right (numbers) are right-aligned."""
    every = ([header] if header else []) + rows
    widths = [max(len(row[i]) for row in every) for i in range(len(every[0]))] if every else []

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return [line(row).rstrip() for row in every]


def show(args: argparse.Namespace, data: object, lines: Sequence[str]) -> None:
    text = json.dumps(data, indent=2) + "\n" if args.json else "".join(line + "\n" for line in lines)
    sys.stdout.write(text)


def stat_json(st: Stat) -> dict[str, Any]:
    return {**dataclasses.asdict(st), "name": st.name, "mode": f"{st.mode:04o}"}


def long_row(st: Stat) -> list[str]:
    """ls -l: mode, owner, group, size, page size, attachments, state, start, name."""
    who = [st.filemode, name_of(st.uid), name_of(st.gid, group=True)]
    if st.kind == "directory":
        return [*who, "-", "-", "-", "-", "-", st.name + "/"]
    return [*who, human(st.size), st.page_size or "-", str(st.attach_count), st.state or "-", f"{st.start:#x}", st.name]


def long_table(entries: list[Stat]) -> list[str]:
    return table([long_row(st) for st in entries], right=frozenset({3, 5}))


def session_row(s: SessionInfo) -> list[str]:
    who = [str(s.id), name_of(s.uid), name_of(s.gid, group=True), str(s.pid or "-"), s.namespace]
    return [*who, str(s.attachment_count), s.client_version, ",".join(f"{a.path}:{a.access}" for a in s.attachments)]


def session_table(sessions: list[SessionInfo]) -> list[str]:
    rows = [session_row(s) for s in sessions]
    header = ["ID", "UID", "GID", "PID", "NAMESPACE", "ATTACHED", "VERSION", "PATHS"]
    return table(rows, header, right=frozenset({0, 3, 5}))


def describe(exc: OSError) -> str:
    """`PATH: strerror`; an unreachable broker's message already names its socket, or gets it added."""
    text = exc.strerror or str(exc)
    if isinstance(exc, ConnectionError):
        return text if not exc.filename or str(exc.filename) in text else f"{text} ({exc.filename})"
    return f"{exc.filename}: {text}" if exc.filename else text


def complain(message: str) -> None:
    sys.stderr.write(f"mshare: {message}\n")


def each(paths: Sequence[str], action: Callable[[str], object]) -> int:
    """Apply action to every path and report each failure, as rm and mkdir do."""
    status = 0
    for path in paths:
        try:
            action(path)
        except ConnectionError:
            raise
        except OSError as exc:
            complain(describe(exc))
            status = EXIT_FAILED
    return status


def out_of_range(path: str, size: int, what: str) -> OSError:
    return OSError(errno.EINVAL, f"{os.strerror(errno.EINVAL)}: {what} beyond the region's {size} bytes", path)


# -- commands ------------------------------------------------------------------------------


def fields(pairs: dict[str, str]) -> list[str]:
    """`name: value` lines with the values aligned."""
    return table([[f"{name}:", value] for name, value in pairs.items()])


def cmd_info(ns: Namespace, args: argparse.Namespace) -> None:
    info, names = ns.info(), ns.namespaces()
    end = info.arena_start + info.arena_size
    pairs = {
        "namespace": info.namespace,
        "broker version": info.broker_version,
        "alignment": f"{human(info.alignment)} ({info.alignment} bytes)",
        "arena": f"{info.arena_start:#x}-{end:#x} ({human(info.arena_size)})",
        "page sizes": f"{' '.join(info.page_sizes)} (default {info.default_page_size})",
        **{
            f"{pool.page_size} pool": f"{pool.free} of {pool.total} pages free ({pool.reserved} reserved)"
            for pool in info.huge_pages
        },
        "shmem thp": info.thp or "-",
        "region capacity": str(info.region_capacity),
        "epoch": str(info.epoch),
        "namespaces": " ".join(names),
    }
    show(args, {**dataclasses.asdict(info), "namespaces": names}, fields(pairs))


def entries(ns: Namespace, path: str) -> list[Stat]:
    """A directory's entries; a region stands for itself, as with ls."""
    try:
        return list(ns.scandir(path))
    except NotADirectoryError:
        return [ns.stat(path)]


def cmd_ls(ns: Namespace, args: argparse.Namespace) -> None:
    found = entries(ns, args.path)
    names = [st.name + "/" if st.kind == "directory" else st.name for st in found]
    show(args, [stat_json(st) for st in found], long_table(found) if args.long else names)


def tree_json(ns: Namespace, st: Stat) -> dict[str, Any]:
    data = stat_json(st)
    if st.kind == "directory":
        try:
            data["children"] = [tree_json(ns, child) for child in ns.scandir(st.path)]
        except (PermissionError, FileNotFoundError) as exc:
            data["error"] = exc.strerror
    return data


def tree_lines(ns: Namespace, path: str, prefix: str, glyphs: tuple[str, str, str]) -> Iterator[str]:
    try:
        children = list(ns.scandir(path))
    except (PermissionError, FileNotFoundError) as exc:
        yield f"{prefix}{glyphs[1]}[{exc.strerror}]"
        return
    for i, st in enumerate(children):
        last = i == len(children) - 1
        if st.kind == "directory":
            yield f"{prefix}{glyphs[last]}{st.name}/"
            yield from tree_lines(ns, st.path, prefix + ("    " if last else glyphs[2]), glyphs)
        else:
            yield f"{prefix}{glyphs[last]}{st.name}  [{human(st.size)}]"


def cmd_tree(ns: Namespace, args: argparse.Namespace) -> None:
    top = ns.stat(args.path)
    if args.json or top.kind != "directory":
        return show(args, tree_json(ns, top), [f"{top.path}  [{human(top.size)}]"])
    utf8 = (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"
    glyphs = ("├── ", "└── ", "│   ") if utf8 else ("|-- ", "`-- ", "|   ")
    show(args, None, [top.path, *tree_lines(ns, top.path, "", glyphs)])


def cmd_stat(ns: Namespace, args: argparse.Namespace) -> None:
    st = ns.stat(args.path)
    pairs = {
        "path": st.path,
        "namespace": st.namespace,
        "kind": st.kind,
        "id": str(st.id),
        "mode": f"{st.mode:04o} ({st.filemode})",
        "uid": f"{st.uid} ({name_of(st.uid)})",
        "gid": f"{st.gid} ({name_of(st.gid, group=True)})",
        "size": f"{st.size} ({human(st.size)})",
        "start": f"{st.start:#x}",
        "page size": st.page_size or "-",
        "attach count": str(st.attach_count),
        "state": st.state or "-",
        "page tables": f"{human(st.pagetable_bytes)} now, {human(st.pagetable_bytes_4k)} with 4k pages"
        if st.kind == "region"
        else "-",
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(st.created)),
    }
    show(args, stat_json(st), fields(pairs))


def mkdir_parents(ns: Namespace, path: str, mode: int) -> None:
    names = [name for name in path.split("/") if name]
    for depth in range(1, len(names) + 1):
        partial = "/" + "/".join(names[:depth])
        try:
            ns.mkdir(partial, mode if depth == len(names) else 0o777)
        except FileExistsError:
            if ns.stat(partial).kind != "directory":
                raise


def cmd_mkdir(ns: Namespace, args: argparse.Namespace) -> int:
    make = functools.partial(mkdir_parents, ns) if args.parents else ns.mkdir
    return each(args.path, lambda path: make(path, args.mode))


def cmd_create(ns: Namespace, args: argparse.Namespace) -> None:
    st = ns.allocate(args.path, args.size, mode=args.mode, start=args.start, page_size=args.page_size)
    show(args, stat_json(st), long_table([st]))


def cmd_cat(ns: Namespace, args: argparse.Namespace) -> None:
    with ns.open(args.path, readonly=True) as region:
        end = region.size if args.length is None else args.offset + args.length
        if args.offset > region.size or end > region.size:
            raise out_of_range(args.path, region.size, "offset and length reach")
        sys.stdout.flush()
        position, fd = args.offset, sys.stdout.fileno()
        # os.write, not sys.stdout.buffer: a BufferedWriter reports a pipe closed mid-write as success.
        with region.buf as view:
            while position < end:
                position += os.write(fd, view[position:end])


def cmd_write(ns: Namespace, args: argparse.Namespace) -> None:
    fd = sys.stdin.fileno()
    with ns.open(args.path) as region:
        if args.offset > region.size:
            raise out_of_range(args.path, region.size, "offset")
        info = os.fstat(fd)
        if stat_module.S_ISREG(info.st_mode):  # a file's length is known: refuse before writing anything
            left = info.st_size - os.lseek(fd, 0, os.SEEK_CUR)
            if args.offset + left > region.size:
                raise out_of_range(args.path, region.size, f"input of {left} bytes from offset {args.offset} reaches")
        position = args.offset
        with region.buf as view:
            while position < region.size and (count := os.readv(fd, [view[position:]])):
                position += count
        # A pipe's length shows only at its end: what fitted stays written, as with dd.
        if os.read(fd, 1):
            raise out_of_range(args.path, region.size, f"input from offset {args.offset} reaches")


def cmd_sessions(ns: Namespace, args: argparse.Namespace) -> None:
    sessions = ns.sessions()
    show(args, [dataclasses.asdict(s) for s in sessions], session_table(sessions))


def walk_regions(ns: Namespace, path: str) -> Iterator[Stat]:
    """Every region under path; directories that vanish or may not be read are skipped."""
    try:
        found = entries(ns, path)
    except (PermissionError, FileNotFoundError):
        return
    for st in found:
        yield from walk_regions(ns, st.path) if st.kind == "directory" else (st,)


def top_frame(ns: Namespace, args: argparse.Namespace, version: str) -> str:
    regions, sessions = list(walk_regions(ns, args.path)), ns.sessions()
    if args.json:
        frame = {"namespace": ns.name, "time": time.time(), "regions": [stat_json(st) for st in regions]}
        return json.dumps({**frame, "sessions": [dataclasses.asdict(s) for s in sessions]}) + "\n"
    attached = sum(1 for st in regions if st.attach_count)
    rows = [[st.path, human(st.size), str(st.attach_count), st.state or "-", st.page_size or "-"] for st in regions]
    lines = [
        f"mshare top - namespace {ns.name}, broker {version} - {time.strftime('%H:%M:%S')}",
        f"regions: {len(regions)} ({human(sum(st.size for st in regions))}, {attached} attached)   sessions: {len(sessions)}",
        "",
        *table(rows, ["PATH", "SIZE", "ATTACHED", "STATE", "PAGE"], right=frozenset({1, 2})),
        "",
        *session_table(sessions),
    ]
    return "".join(line + "\n" for line in lines)


def cmd_top(ns: Namespace, args: argparse.Namespace) -> None:
    version = ns.info().broker_version
    redraw = sys.stdout.isatty() and not args.json
    while True:
        frame = top_frame(ns, args, version)
        if args.once:
            sys.stdout.write(frame)
            return
        sys.stdout.write(CLEAR + frame if redraw else frame if args.json else frame + "\n")
        sys.stdout.flush()
        time.sleep(args.interval)


def cmd_health(args: argparse.Namespace) -> int:
    """A plain grpc.health.v1 check of the broker's gRPC socket: no session, no namespace."""
    reason = ""
    try:
        target = f"unix:{find_run_dir(args.run_dir) / GRPC_SOCKET}"
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
        status = str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except ConnectionError as exc:
        status, reason = "UNREACHABLE", describe(exc)
    except grpc.RpcError as exc:
        status, reason = "UNREACHABLE", f"{target}: {exc.code().name}: {' '.join(str(exc.details()).split())}"
    print(status)
    if reason:
        complain(reason)
    return 0 if status == "SERVING" else EXIT_FAILED


# -- the parser ----------------------------------------------------------------------------


def global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # Also accepted after the subcommand; there SUPPRESS keeps the subparser from resetting what came before it.
    run_dir, namespace = (None, "default") if top else (argparse.SUPPRESS, argparse.SUPPRESS)
    parser.add_argument("--run-dir", metavar="DIR", default=run_dir, help="broker run dir (default: $MSHARE_RUN_DIR or found)")
    parser.add_argument("-n", "--namespace", metavar="NAME", default=namespace, help="namespace (default: default)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mshare", description="Manage the namespaces, regions and sessions of an mshare broker.")
    global_options(parser, top=True)
    parser.add_argument("--version", action="version", version=f"mshare {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Callable[..., int | None], help: str, *paths: str, json: bool = False) -> Any:
        """A subcommand; paths are positional names, "path?" optional (default /), "path+" one or more."""
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        global_options(sub, top=False)
        if json:
            sub.add_argument("--json", action="store_true", help="machine-readable JSON")
        for spec in paths:
            dest, many = spec.rstrip("?+"), spec[-1] if spec[-1] in "?+" else None
            sub.add_argument(dest, metavar=dest.upper(), nargs=many, default="/" if many == "?" else None)
        return sub

    command("info", cmd_info, "alignment, arena, page sizes, broker version, namespaces", json=True)
    command("ls", cmd_ls, "list a directory (default /)", "path?", json=True).add_argument(
        "-l", dest="long", action="store_true", help="long listing, like ls -l"
    )
    command("tree", cmd_tree, "the tree under a directory, regions with their size", "path?", json=True)
    command("stat", cmd_stat, "every field of an entry", "path", json=True)
    sub = command("mkdir", cmd_mkdir, "make directories", "path+")
    sub.add_argument("-m", "--mode", type=octal, default=0o777, help="octal mode (default 0777)")
    sub.add_argument("-p", "--parents", action="store_true", help="make parents as needed; no error if it exists")
    command("rmdir", lambda ns, a: each(a.path, ns.rmdir), "remove empty directories", "path+")
    command("rm", lambda ns, a: each(a.path, ns.unlink), "unlink regions (freed when their last user detaches)", "path+")
    command("mv", lambda ns, a: ns.rename(a.src, a.dst), "rename an entry", "src", "dst")
    sub = command("chmod", lambda ns, a: each(a.path, lambda p: ns.chmod(p, a.mode)), "change the mode of entries")
    sub.add_argument("mode", metavar="MODE", type=octal, help="octal, like 640")
    sub.add_argument("path", metavar="PATH", nargs="+")
    sub = command("chown", lambda ns, a: each(a.path, lambda p: ns.chown(p, *a.owner)), "change owners (root only)")
    sub.add_argument("owner", metavar="UID[:GID]", type=owner, help="names or numbers; empty or -1 keeps")
    sub.add_argument("path", metavar="PATH", nargs="+")
    sub = command("create", cmd_create, "create a region without mapping it here", "path", json=True)
    sub.add_argument("--size", type=size, required=True, help="bytes, or with K/M/G/T (KiB..TiB)")
    sub.add_argument("--mode", type=octal, default=0o600, help="octal mode (default 0600)")
    sub.add_argument("--page-size", choices=PAGE_SIZES, help="page policy (default: the namespace's)")
    sub.add_argument("--start", type=size, help="a fixed start address, like 0x7f0000000000")
    sub = command("cat", cmd_cat, "write a region's bytes to stdout", "path")
    sub.add_argument("--offset", type=size, default=0)
    sub.add_argument("--length", type=size, help="bytes to write (default: to the end)")
    command("write", cmd_write, "copy stdin into a region", "path").add_argument("--offset", type=size, default=0)
    command("sessions", cmd_sessions, "the live sessions and what they have attached", json=True)
    sub = command("top", cmd_top, "a refreshing table of regions and sessions (--json: a line per frame)", "path?", json=True)
    sub.add_argument("--once", action="store_true", help="print one frame and exit")
    sub.add_argument("--interval", type=seconds, default=2.0, metavar="SECONDS", help="default 2")
    sub = command("health", cmd_health, "gRPC health check: prints SERVING, NOT_SERVING or UNREACHABLE")
    sub.add_argument("--timeout", type=seconds, default=HEALTH_TIMEOUT, metavar="SECONDS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "health":
            return cmd_health(args)
        with connect(args.namespace, run_dir=args.run_dir) as ns:
            status: int | None = args.func(ns, args)
        sys.stdout.flush()
        return status or 0
    except KeyboardInterrupt:
        return 0 if args.command == "top" else EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader left (mshare ls | head): stop quietly, and keep the exit flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        complain(describe(exc))
        return EXIT_FAILED
    except ValueError as exc:  # what the SDK refuses before any call, like a relative path
        complain(str(exc))
        return EXIT_USAGE
