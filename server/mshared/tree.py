"""Namespace trees: path rules, directories and POSIX permission checks; pure Python, no I/O."""

from __future__ import annotations

import errno
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from .errors import BrokerError

#: Longest name of one entry, in UTF-8 bytes, as NAME_MAX on Linux.
NAME_MAX: Final = 255
#: Longest path, in UTF-8 bytes, as PATH_MAX on Linux.
PATH_MAX: Final = 4096

#: Permission bits a check may ask for, as in access(2).
R_OK: Final = 4
W_OK: Final = 2
X_OK: Final = 1

#: The uid that bypasses permission checks.
ROOT_UID: Final = 0


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who is asking: the kernel-verified identity of a session (SO_PEERCRED, SO_PEERGROUPS)."""

    uid: int
    gid: int
    groups: frozenset[int] = frozenset()
    pid: int = 0

    @property
    def is_root(self) -> bool:
        return self.uid == ROOT_UID

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.groups


def split_path(path: str) -> tuple[str, ...]:
    """The names of an absolute path; raises EINVAL or ENAMETOOLONG for a bad one.

    Repeated slashes count as one, as in POSIX; a trailing slash is dropped
    here, and callers that care (names_a_directory) look at the path. "." and
    ".." are refused: a namespace has no working directory to make them useful.
    """
    if not path.startswith("/") or "\0" in path:
        raise BrokerError(errno.EINVAL, "a path must be absolute and must not contain NUL", path)
    # A character is at most 4 bytes of UTF-8: only long strings need encoding to be measured.
    if len(path) > PATH_MAX // 4 and len(path.encode()) > PATH_MAX:
        raise BrokerError(errno.ENAMETOOLONG, f"path longer than {PATH_MAX} bytes", path[:64] + "...")
    names = tuple(filter(None, path.split("/")))
    for name in names:
        if name == "." or name == "..":
            raise BrokerError(errno.EINVAL, f"{name!r} is not allowed in a path", path)
        if len(name) > NAME_MAX // 4 and len(name.encode()) > NAME_MAX:
            raise BrokerError(errno.ENAMETOOLONG, f"name longer than {NAME_MAX} bytes", path)
    return names


def names_a_directory(path: str) -> bool:
    """A trailing slash says the path must name a directory, as in POSIX."""
    return len(path) > 1 and path.endswith("/")


def check_slash(node: Node, path: str) -> None:
    """ENOTDIR when a path with a trailing slash reaches a region."""
    if names_a_directory(path) and not isinstance(node, Directory):
        raise BrokerError(errno.ENOTDIR, "", path)


class Node:
    """An inode of a namespace tree: what directories and regions share."""

    __slots__ = ("created_ns", "gid", "id", "mode", "name", "parent", "uid")

    def __init__(self, node_id: int, mode: int, uid: int, gid: int) -> None:
        self.id = node_id
        self.name = ""
        self.parent: Directory | None = None
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.created_ns = time.time_ns()

    @property
    def path(self) -> str:
        """The node's absolute path; "" once it is no longer linked into a tree."""
        names: list[str] = []
        node: Node = self
        while node.parent is not None:
            names.append(node.name)
            node = node.parent
        if not isinstance(node, Directory) or not node.is_root:
            return ""
        return "/" + "/".join(reversed(names))

    def ancestors(self) -> Iterator[Directory]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class Directory(Node):
    """A directory: children by name, plus names being created (reserved, not yet visible)."""

    __slots__ = ("_sorted", "children", "is_root", "pending")

    def __init__(self, node_id: int, mode: int, uid: int, gid: int, *, is_root: bool = False) -> None:
        super().__init__(node_id, mode, uid, gid)
        self.children: dict[str, Node] = {}
        self.pending: set[str] = set()
        self.is_root = is_root
        self._sorted: list[str] | None = None

    def sorted_names(self) -> list[str]:
        """Children's names in order, cached until the directory changes (listings are paged)."""
        if self._sorted is None:
            self._sorted = sorted(self.children)
        return self._sorted

    def link(self, name: str, node: Node) -> None:
        self.children[name] = node
        node.name, node.parent = name, self
        self._sorted = None

    def unlink(self, name: str) -> Node:
        node = self.children.pop(name)
        node.parent = None
        self._sorted = None
        return node

    def taken(self, name: str) -> bool:
        return name in self.children or name in self.pending


def permits(node: Node, creds: Credentials, want: int) -> bool:
    """POSIX access check of want (R_OK|W_OK|X_OK bits) on node; root passes."""
    if creds.is_root:
        return True
    if creds.uid == node.uid:
        bits = node.mode >> 6
    elif creds.in_group(node.gid):
        bits = node.mode >> 3
    else:
        bits = node.mode
    return bits & want == want


def require(node: Node, creds: Credentials, want: int, path: str) -> None:
    if not permits(node, creds, want):
        raise BrokerError(errno.EACCES, "", path)


def require_owner(node: Node, creds: Credentials, path: str) -> None:
    """chmod's rule: only the owner or root."""
    if not creds.is_root and creds.uid != node.uid:
        raise BrokerError(errno.EPERM, "only the owner or root may change this", path)


def require_sticky(parent: Directory, child: Node, creds: Credentials, path: str) -> None:
    """Sticky directories: only the child's owner, the directory's owner or root remove or rename."""
    if parent.mode & stat.S_ISVTX and not creds.is_root and creds.uid not in (parent.uid, child.uid):
        raise BrokerError(errno.EPERM, "the directory is sticky and the entry is not yours", path)


def new_entry_gid(parent: Directory, creds: Credentials) -> int:
    """The group of a new entry: the parent's when it is set-group-ID, else the creator's."""
    return parent.gid if parent.mode & stat.S_ISGID else creds.gid


@dataclass(slots=True)
class Tree:
    """One namespace's tree of directories and (via Node subclasses) regions."""

    root: Directory

    def lookup(self, names: tuple[str, ...], creds: Credentials, path: str) -> Node:
        """The node at names, checking search permission on every directory passed."""
        node: Node = self.root
        for name in names:
            if not isinstance(node, Directory):
                raise BrokerError(errno.ENOTDIR, "", path)
            require(node, creds, X_OK, path)
            child = node.children.get(name)
            if child is None:
                raise BrokerError(errno.ENOENT, "", path)
            node = child
        check_slash(node, path)
        return node

    def lookup_parent(self, names: tuple[str, ...], creds: Credentials, path: str) -> Directory:
        """The directory that holds (or would hold) the last name, with search permission on it."""
        parent = self.lookup(names[:-1], creds, path)
        if not isinstance(parent, Directory):
            raise BrokerError(errno.ENOTDIR, "", path)
        require(parent, creds, X_OK, path)
        return parent

    def lookup_removable(self, names: tuple[str, ...], creds: Credentials, path: str) -> tuple[Directory, Node]:
        """The entry at names and its directory, if creds may remove it (may_delete in Linux):
        write and search on the directory, and the sticky rule."""
        parent = self.lookup_parent(names, creds, path)
        node = parent.children.get(names[-1])
        if node is None:
            raise BrokerError(errno.ENOENT, "", path)
        require(parent, creds, W_OK | X_OK, path)
        require_sticky(parent, node, creds, path)
        return parent, node

    def check_reachable(self, node: Node, creds: Credentials, path: str) -> None:
        """Search permission on every ancestor of a node reached by id rather than by path."""
        for directory in node.ancestors():
            require(directory, creds, X_OK, path)
