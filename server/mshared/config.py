"""One frozen Config from flags, MSHARE_* environment variables and an optional TOML file."""

from __future__ import annotations

import argparse
import grp
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from .broker import NamespaceSpec
from .regions import GiB, PagePolicy

#: The namespace that always exists.
DEFAULT_NAMESPACE: Final = "default"
#: Region alignment when the config names none: one PMD (2 MiB) on x86-64 and arm64.
DEFAULT_ALIGNMENT: Final = 2 << 20
DEFAULT_METRICS_ADDRESS: Final = "127.0.0.1:9464"
#: Like /sys/fs/mshare: every local user reaches the sockets; access is decided per entry.
DEFAULT_SOCKET_MODE: Final = 0o666
#: Seconds in-flight calls get to finish after SIGTERM.
DEFAULT_GRACE: Final = 5.0
#: Longest spin: past a few milliseconds a sleeping wake-up costs less than the CPU burnt.
MAX_SPIN_US: Final = 10_000
#: Smallest page of any supported machine; alignment must be at least this.
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_LOG_LEVELS: Final = ("debug", "info", "warning", "error")
_LOG_FORMATS: Final = ("text", "json")


class ConfigError(Exception):
    """A bad option value; str() is the one line mshared prints before exiting with status 2."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


def parse_size(text: str | int, option: str) -> int:
    """ "2M", "1GiB", "4096" -> bytes; K/M/G/T are powers of 1024."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise ConfigError(option, f"{text!r} is not a size (like 4096, 2M or 1G)")
        value = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0:
        raise ConfigError(option, f"{text!r} must be positive")
    return value


def parse_alignment(text: str | int, option: str) -> int:
    value = parse_size(text, option)
    if value & (value - 1) or value < PAGE_SIZE:
        raise ConfigError(option, f"{text!r} must be a power of two of at least the page size ({PAGE_SIZE})")
    return value


def parse_mode(text: str | int, option: str) -> int:
    try:
        value = text if isinstance(text, int) else int(str(text), 8)
    except ValueError:
        raise ConfigError(option, f"{text!r} is not an octal mode like 0666") from None
    if not 0 <= value <= 0o7777:
        raise ConfigError(option, f"{text!r} is not a mode (0000..7777)")
    return value


def parse_address(text: str, option: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(option, f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_group(text: str | int, option: str) -> int:
    if isinstance(text, int) or str(text).isdigit():
        return int(text)
    try:
        return grp.getgrnam(str(text)).gr_gid
    except KeyError:
        raise ConfigError(option, f"no group named {text!r}") from None


def parse_policy(text: str, option: str) -> PagePolicy:
    try:
        return PagePolicy(str(text))
    except ValueError:
        raise ConfigError(option, f"{text!r} is not one of {', '.join(p.value for p in PagePolicy)}") from None


def parse_choice(text: str, option: str, choices: Sequence[str]) -> str:
    value = str(text).lower()
    if value not in choices:
        raise ConfigError(option, f"{text!r} is not one of {', '.join(choices)}")
    return value


def parse_int(text: str | int, option: str) -> int:
    try:
        return int(str(text), 0)
    except ValueError:
        raise ConfigError(option, f"{text!r} is not a number") from None


def default_run_dir() -> Path:
    """/run/mshare for root, $XDG_RUNTIME_DIR/mshare otherwise, else /tmp/mshare-$UID."""
    if os.geteuid() == 0:
        return Path("/run/mshare")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "mshare" if runtime else Path(f"/tmp/mshare-{os.geteuid()}")


def address_space_top() -> int:
    """The top of this machine's user address space, from where the kernel put our stack.

    The stack sits just under TASK_SIZE; rounding its end up to a power of two
    gives 2**47 on x86-64 (2**48 on 48-bit arm64, 2**39 on 39-bit arm64)
    without reading architecture-specific constants.
    """
    top = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            end = int(line.split("-", 1)[1].split(" ", 1)[0], 16)
            if end < 1 << 63:  # the vsyscall page of x86-64 lives above the user range
                top = max(top, end)
    return 1 << (top - 1).bit_length()


def mmap_min_addr() -> int:
    try:
        return max(int(Path("/proc/sys/vm/mmap_min_addr").read_text()), PAGE_SIZE)
    except (OSError, ValueError):
        return 1 << 16


def default_arena(top: int) -> tuple[int, int]:
    """[top/8, top/8 + top/4): above every brk heap and below PIE executables (2/3 of top)
    and the top-down mmap area, so it is free in ordinary processes; 32 TiB on x86-64."""
    return top // 8, top // 4


@dataclass(frozen=True, slots=True)
class Config:
    """Everything mshared runs with; built once, never changed."""

    run_dir: Path
    metrics_host: str
    metrics_port: int
    socket_mode: int
    socket_group: int | None
    log_level: str
    log_format: str
    namespaces: tuple[NamespaceSpec, ...]
    arena_start: int
    arena_size: int
    min_address: int
    max_address: int
    grace: float
    spin_us: int = 0

    @property
    def session_socket(self) -> Path:
        return self.run_dir / "session.sock"

    @property
    def grpc_socket(self) -> Path:
        return self.run_dir / "mshare.sock"

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "mshared.lock"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, as every mshared error is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


#: (flag, environment variable, config-file key, help)
_OPTIONS: Final = (
    (
        "--run-dir",
        "MSHARE_RUN_DIR",
        "run_dir",
        "directory of the sockets and the lock (default: /run/mshare for root, else $XDG_RUNTIME_DIR/mshare or /tmp/mshare-$UID)",
    ),
    ("--config", "MSHARE_CONFIG", None, "TOML file with namespaces, arena and the options below"),
    (
        "--metrics-address",
        "MSHARE_METRICS_ADDRESS",
        "metrics_address",
        f"HOST:PORT of /metrics; port 0 picks a free one (default {DEFAULT_METRICS_ADDRESS})",
    ),
    ("--socket-mode", "MSHARE_SOCKET_MODE", "socket_mode", "octal mode of both sockets (default 0666)"),
    ("--socket-group", "MSHARE_SOCKET_GROUP", "socket_group", "group (name or gid) of both sockets"),
    ("--alignment", "MSHARE_ALIGNMENT", "alignment", "default region alignment, a power of two (default 2M)"),
    ("--log-level", "MSHARE_LOG_LEVEL", "log_level", "debug, info, warning or error (default info)"),
    ("--log-format", "MSHARE_LOG_FORMAT", "log_format", "text or json (default text)"),
    ("--grace", "MSHARE_GRACE", "grace", f"seconds in-flight calls get on SIGTERM (default {DEFAULT_GRACE:g})"),
    (
        "--spin-us",
        "MSHARE_SPIN_US",
        "spin_us",
        "low-latency mode: poll the session socket this many microseconds before sleeping (default 0: off)",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mshared", description="mshare broker: msharefs-style namespaces of fixed-address shared memory.")
    for flag, env, _, text in _OPTIONS:
        parser.add_argument(flag, metavar=flag[2:].replace("-", "_").upper(), help=f"{text} [env {env}]")
    return parser


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Flags beat MSHARE_* variables, which beat the config file, which beats the defaults."""
    args = vars(build_parser().parse_args(argv))
    env = os.environ if environ is None else environ
    merged: dict[str, tuple[Any, str]] = {}
    config_path = args.get("config") or env.get("MSHARE_CONFIG")
    file_values: dict[str, Any] = _read_toml(Path(config_path)) if config_path else {}
    for flag, var, key, _ in _OPTIONS:
        dest = flag[2:].replace("-", "_")
        if args.get(dest) is not None:
            merged[dest] = (args[dest], flag)
        elif var in env:
            merged[dest] = (env[var], var)
        elif key is not None and key in file_values:
            merged[dest] = (file_values[key], f"{config_path}: {key}")
    return _build(merged, file_values, str(config_path or ""))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None


def _build(values: dict[str, tuple[Any, str]], file_values: dict[str, Any], config_path: str) -> Config:
    def get(name: str, default: Any) -> tuple[Any, str]:
        return values.get(name, (default, f"--{name.replace('_', '-')}"))

    run_dir = Path(str(get("run_dir", default_run_dir())[0])).absolute()
    host, port = parse_address(*get("metrics_address", DEFAULT_METRICS_ADDRESS))
    socket_mode = parse_mode(*get("socket_mode", DEFAULT_SOCKET_MODE))
    group_value, group_option = get("socket_group", None)
    socket_group = parse_group(group_value, group_option) if group_value not in (None, "") else None
    alignment = parse_alignment(*get("alignment", DEFAULT_ALIGNMENT))
    log_level = parse_choice(*get("log_level", "info"), _LOG_LEVELS)
    log_format = parse_choice(*get("log_format", "text"), _LOG_FORMATS)
    grace_value, grace_option = get("grace", DEFAULT_GRACE)
    try:
        grace = float(grace_value)
    except ValueError:
        raise ConfigError(grace_option, f"{grace_value!r} is not a number of seconds") from None
    if grace < 0:
        raise ConfigError(grace_option, "must not be negative")
    spin_value, spin_option = get("spin_us", 0)
    spin_us = parse_int(spin_value, spin_option)
    if not 0 <= spin_us <= MAX_SPIN_US:
        raise ConfigError(spin_option, f"{spin_value!r} is not within 0..{MAX_SPIN_US} microseconds")

    top = address_space_top()
    arena_start, arena_size = default_arena(top)
    arena = file_values.get("arena", {})
    where = f"{config_path}: arena"
    if not isinstance(arena, dict):
        raise ConfigError(where, "must be a table with start and size")
    if "start" in arena:
        arena_start = parse_int(arena["start"], f"{where}.start")
    if "size" in arena:
        arena_size = parse_size(arena["size"], f"{where}.size")
    if arena_start % GiB or arena_size % GiB:
        raise ConfigError(where, "start and size must be multiples of 1G (hugetlb regions start on 1 GiB boundaries)")
    if arena_start < mmap_min_addr() or arena_start + arena_size > top:
        raise ConfigError(where, f"{arena_start:#x}+{arena_size:#x} is outside the user address space (top {top:#x})")

    namespaces = _namespaces(file_values.get("namespaces", {}), alignment, config_path)
    return Config(
        run_dir=run_dir,
        metrics_host=host,
        metrics_port=port,
        socket_mode=socket_mode,
        socket_group=socket_group,
        log_level=log_level,
        log_format=log_format,
        namespaces=namespaces,
        arena_start=arena_start,
        arena_size=arena_size,
        min_address=mmap_min_addr(),
        max_address=top,
        grace=grace,
        spin_us=spin_us,
    )


def _namespaces(table: Any, alignment: int, config_path: str) -> tuple[NamespaceSpec, ...]:
    """[namespaces.NAME] tables: alignment, page_size, root_mode, root_uid, root_gid."""
    if not isinstance(table, dict):
        raise ConfigError(f"{config_path}: namespaces", "must be a table of tables")
    table = {DEFAULT_NAMESPACE: {}, **table}
    specs = []
    for name, entry in sorted(table.items()):
        where = f"{config_path}: namespaces.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(where, "must be a table")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
            raise ConfigError(where, "a namespace name is 1-63 letters, digits, '_', '.' or '-'")
        unknown = set(entry) - {"alignment", "page_size", "root_mode", "root_uid", "root_gid"}
        if unknown:
            raise ConfigError(where, f"unknown key {sorted(unknown)[0]!r}")
        specs.append(
            NamespaceSpec(
                name=name,
                alignment=parse_alignment(entry.get("alignment", alignment), f"{where}.alignment"),
                default_policy=parse_policy(entry.get("page_size", PagePolicy.SMALL.value), f"{where}.page_size"),
                root_uid=parse_int(entry.get("root_uid", 0), f"{where}.root_uid"),
                root_gid=parse_int(entry.get("root_gid", 0), f"{where}.root_gid"),
                root_mode=parse_mode(entry.get("root_mode", 0o1777), f"{where}.root_mode"),
            )
        )
    return tuple(specs)
