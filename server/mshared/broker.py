"""The broker's state behind one lock: namespaces, regions, sessions, attachments; no sockets, no gRPC."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import secrets
import stat
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from .errors import BrokerError
from .records import AttachmentView, BrokerStats, EntryView, Handoff, SessionRecord, SessionView
from .regions import Access, AddressSpace, Attachment, Backing, GiB, PagePolicy, Region, State, pagetable_bytes
from .tree import (
    R_OK,
    W_OK,
    X_OK,
    Credentials,
    Directory,
    Node,
    Tree,
    check_slash,
    names_a_directory,
    new_entry_gid,
    require,
    require_owner,
    require_sticky,
    split_path,
)
from .watch import QUEUE_LIMIT, Event, EventKind, Watcher

log = logging.getLogger(__name__)

#: Entries per listing page when the caller names no size, and the most it may ask for:
#: a page must fit comfortably in one gRPC message (4 MiB by default).
DEFAULT_PAGE_SIZE: Final = 1000
MAX_PAGE_SIZE: Final = 10000

#: Watch streams per session and per broker: each holds a gRPC worker thread.
MAX_WATCHES_PER_SESSION: Final = 4
MAX_WATCHES_PER_UID: Final = 8
MAX_WATCHES: Final = 32

#: Paths a session's lookup cache keeps (it starts afresh when full): enough for the regions
#: a process opens over and over, little memory per session.
RESOLVED_PER_SESSION: Final = 64

#: Regions read per lock hold when metrics are scraped.
STATS_CHUNK: Final = 1000

#: Looked up once: an enum member read through its class costs a Python-level lookup on the detach path.
_UNLINKED: Final = State.UNLINKED

#: Builds a NamedTuple from a tuple of its fields in C: the class's own __new__ is a Python
#: function, a frame more on the attach path for each one made.
_new_tuple: Final = tuple.__new__

#: uid and gid values chown accepts; (uid_t)-1 means "keep".
MAX_ID: Final = (1 << 32) - 2

#: Makes the kernel object behind a new region, given the region and the path it is created at.
BackingFactory = Callable[[Region, str], Backing]


@dataclass(frozen=True, slots=True)
class NamespaceSpec:
    """A namespace as the config defines it."""

    name: str
    alignment: int
    default_policy: PagePolicy
    root_uid: int = 0
    root_gid: int = 0
    root_mode: int = 0o1777


class Namespace:
    """One msharefs mount: a tree and its fixed properties."""

    __slots__ = ("alignment", "default_policy", "name", "tree")

    def __init__(self, spec: NamespaceSpec, root_id: int) -> None:
        self.name = spec.name
        self.alignment = spec.alignment
        self.default_policy = spec.default_policy
        self.tree = Tree(Directory(root_id, spec.root_mode, spec.root_uid, spec.root_gid, is_root=True))


class Broker:
    """Every namespace, region, session and attachment, changed in one place under one lock.

    Operations take the caller's Credentials (or its SessionRecord) and raise
    BrokerError with the errno a client sees. Creating a region's backing is
    the only slow step; it runs outside the lock between a reservation (the
    name and the address range) and a commit or rollback.
    """

    def __init__(
        self,
        namespaces: Iterable[NamespaceSpec],
        space: AddressSpace,
        backing_factory: BackingFactory,
        policies: Iterable[PagePolicy] = (PagePolicy.SMALL,),
    ) -> None:
        # Protects everything below; held only for in-memory work and fd closes, never across a send.
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._namespaces = {spec.name: Namespace(spec, next(self._ids)) for spec in namespaces}
        self.space = space
        self._backing_factory = backing_factory
        self.policies = frozenset(policies)
        self.epoch = secrets.randbits(63)
        self._regions: dict[int, Region] = {}
        self._sessions: dict[int, SessionRecord] = {}
        self._tokens: dict[str, SessionRecord] = {}
        self._watchers: dict[int, Watcher] = {}
        # Bumped by every change to a name, mode or owner: the sessions' cached path lookups go stale.
        self._generation = 0
        self.freed_total = {name: 0 for name in self._namespaces}
        self.sessions_reclaimed_total = 0
        self.address_conflicts_total = 0
        self.watches_dropped_total = 0

    # -- namespaces -----------------------------------------------------------------

    def namespace(self, name: str) -> Namespace:
        found = self._namespaces.get(name)
        if found is None:
            raise BrokerError(errno.ENOENT, f"no namespace {name!r} (configured: {', '.join(sorted(self._namespaces))})")
        return found

    def namespaces(self) -> list[Namespace]:
        return [self._namespaces[name] for name in sorted(self._namespaces)]

    # -- sessions -------------------------------------------------------------------

    def open_session(self, creds: Credentials, namespace: str, client_version: str) -> SessionRecord:
        self.namespace(namespace)
        with self._lock:
            session = SessionRecord(next(self._ids), creds, namespace, client_version)
            self._sessions[session.id] = session
            self._tokens[session.token] = session
        log.info(
            "session %d opened: uid %d gid %d pid %d namespace %s client %s",
            session.id,
            creds.uid,
            creds.gid,
            creds.pid,
            namespace,
            client_version or "-",
        )
        return session

    def session_for_token(self, token: str) -> SessionRecord | None:
        return self._tokens.get(token)

    def end_session(self, session: SessionRecord) -> None:
        """The session's connection is gone: every attachment it held ends now."""
        with self._lock:
            if session.closed:
                return
            session.close()
            self._sessions.pop(session.id, None)
            self._tokens.pop(session.token, None)
            held = len(session.attachments)
            if held:
                self.sessions_reclaimed_total += 1
            self._detach_locked(session, list(session.attachments))
            for watcher in [w for w in self._watchers.values() if w.session_id == session.id]:
                self._unwatch_locked(watcher)
        log.info(
            "session %d closed: uid %d pid %d, %d attachments released", session.id, session.creds.uid, session.creds.pid, held
        )

    def sessions(self) -> list[SessionView]:
        with self._lock:
            return [
                SessionView(
                    s.id, s.creds, s.namespace, s.client_version, tuple(self._attachment_view(a) for a in s.attachments.values())
                )
                for s in sorted(self._sessions.values(), key=lambda s: s.id)
            ]

    # -- regions --------------------------------------------------------------------

    def create_region(
        self,
        session: SessionRecord,
        namespace: str,
        path: str,
        size: int,
        mode: int,
        start: int,
        policy: PagePolicy | None,
        *,
        attach: bool,
    ) -> tuple[EntryView, Handoff | None]:
        """O_CREAT|O_EXCL a region; attach it read-write for the creator when attach is set."""
        creds = session.creds
        ns = self.namespace(namespace or session.namespace)
        names = split_path(path)
        if not names:
            raise BrokerError(errno.EEXIST, "", path)
        policy = policy or ns.default_policy
        if names_a_directory(path):
            raise BrokerError(errno.EISDIR, "a region cannot be created with a trailing slash", path)
        with self._lock:
            parent = ns.tree.lookup_parent(names, creds, path)
            name = names[-1]
            if parent.taken(name):
                raise BrokerError(errno.EEXIST, "", path)
            require(parent, creds, W_OK | X_OK, path)
            alignment = self._check_geometry(ns, path, size, start, policy)
            try:
                if start:
                    self.space.claim(start, size)
                else:
                    start = self.space.allocate(size, max(alignment, GiB) if policy.huge_page_bytes else alignment)
            except BrokerError as exc:
                if exc.errno == errno.EADDRINUSE:
                    self.address_conflicts_total += 1
                exc.path = path
                raise
            region = Region(next(self._ids), ns.name, start, size, policy, mode & 0o777, creds.uid, new_entry_gid(parent, creds))
            parent.pending.add(name)
        try:
            backing = self._backing_factory(region, path)
        except BaseException:
            with self._lock:
                parent.pending.discard(name)
                self.space.release(region.start, region.size)
            raise
        with self._lock:
            parent.pending.discard(name)
            region.backing = backing
            parent.link(name, region)
            self._regions[region.id] = region
            self._emit(EventKind.CREATED, region, path, parent)
            handoff = self._attach_locked(session, region, Access.READ_WRITE, path) if attach and not session.closed else None
            view = self._view(region, ns.name)
        log.info(
            "region created: %s:%s id %d start %#x size %d policy %s uid %d",
            ns.name,
            path,
            region.id,
            region.start,
            region.size,
            policy.value,
            creds.uid,
        )
        return view, handoff

    def attach(self, session: SessionRecord, namespace: str, path: str, region_id: int, access: Access) -> Handoff:
        """Open a region by path (or by id, with the same permission checks) for this session.

        A path the session opened before with the same access resolves from its
        cache, valid while no name, mode or owner in any tree has changed since.
        Logs nothing: attach is the hot path, and its caller logs once the reply is out.
        """
        key = (namespace, path, access)
        self._lock.acquire()  # not `with`: on the hot path it costs two bound methods per call
        try:
            if session.resolved_generation != self._generation:
                session.resolved.clear()
                session.resolved_generation = self._generation
            region = session.resolved.get(key) if path else None
            if region is None:
                region, found_at = self._resolve_locked(session, namespace, path, region_id, access)
                if path:
                    if len(session.resolved) >= RESOLVED_PER_SESSION:
                        session.resolved.clear()
                    session.resolved[key] = region
                path = found_at
            if session.closed:
                raise BrokerError(errno.ENOENT, "the session has ended")
            return self._attach_locked(session, region, access, path)
        finally:
            self._lock.release()

    def _resolve_locked(
        self, session: SessionRecord, namespace: str, path: str, region_id: int, access: Access
    ) -> tuple[Region, str]:
        """The region to attach and its path, with every permission check of an open."""
        creds = session.creds
        ns = self.namespace(namespace or session.namespace)
        if path:
            node = ns.tree.lookup(split_path(path), creds, path)
            if not isinstance(node, Region):
                raise BrokerError(errno.EISDIR, "", path)
        else:
            found = self._regions.get(region_id)
            if found is None or found.namespace != ns.name or found.state is not State.ACTIVE:
                raise BrokerError(errno.ENOENT, f"no region with id {region_id}")
            node, path = found, found.path
            ns.tree.check_reachable(node, creds, path)
        require(node, creds, R_OK | (W_OK if access is Access.READ_WRITE else 0), path)
        return node, path

    def detach(self, session: SessionRecord, attachment_ids: Iterable[int]) -> None:
        with self._lock:
            self._detach_locked(session, attachment_ids)

    def unlink(self, creds: Credentials, namespace: str, path: str) -> EntryView:
        """Remove a region's name now; the region goes when its last attachment ends."""
        ns = self.namespace(namespace)
        names = split_path(path)
        if not names:
            raise BrokerError(errno.EISDIR, "", path)
        with self._lock:
            parent, node = ns.tree.lookup_removable(names, creds, path)
            if isinstance(node, Directory):
                raise BrokerError(errno.EISDIR, "", path)
            check_slash(node, path)
            parent.unlink(names[-1])
            assert isinstance(node, Region)
            self._unlinked_locked(node, path, parent)
            return self._view(node, ns.name)

    # -- watches ---------------------------------------------------------------------

    def watch(self, session: SessionRecord, namespace: str, path: str, recursive: bool) -> Watcher:
        """Subscribe to the events under path; the snapshot of what is there now comes first.

        Needs what listing needs: read and search on a watched directory, or
        on the directory of a watched region (the events need no less). EMFILE
        past the per-session, per-uid and broker-wide limits.
        """
        creds = session.creds
        ns = self.namespace(namespace or session.namespace)
        names = split_path(path)
        with self._lock:
            node = ns.tree.lookup(names, creds, path)
            listed = node if isinstance(node, Directory) else node.parent
            if listed is not None:
                require(listed, creds, R_OK | X_OK, path)
            mine = sum(1 for w in self._watchers.values() if w.session_id == session.id)
            theirs = sum(1 for w in self._watchers.values() if w.creds.uid == creds.uid)
            if (
                mine >= MAX_WATCHES_PER_SESSION
                or (theirs >= MAX_WATCHES_PER_UID and not creds.is_root)
                or len(self._watchers) >= MAX_WATCHES
            ):
                raise BrokerError(
                    errno.EMFILE,
                    f"too many watches ({MAX_WATCHES_PER_SESSION} per session, {MAX_WATCHES_PER_UID} per uid, "
                    f"{MAX_WATCHES} per broker)",
                    path,
                )
            watcher = Watcher(next(self._ids), session.id, creds, ns.name, node.path, recursive)
            for entry, entry_path, parent in self._snapshot(node, recursive):
                if watcher.wants(ns.name, entry_path, parent, entry.uid):
                    watcher.push(Event(EventKind.EXISTING, ns.name, entry_path, self._view(entry, ns.name)), snapshot=True)
            watcher.push(Event(EventKind.SYNCED, ns.name, node.path), snapshot=True)
            self._watchers[watcher.id] = watcher
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            self._unwatch_locked(watcher)

    def close_watches(self) -> None:
        """End every watch stream (shutdown)."""
        with self._lock:
            for watcher in list(self._watchers.values()):
                self._unwatch_locked(watcher)

    def _unwatch_locked(self, watcher: Watcher) -> None:
        self._watchers.pop(watcher.id, None)
        watcher.close()

    @staticmethod
    def _snapshot(node: Node, recursive: bool) -> Iterator[tuple[Node, str, Directory | None]]:
        """(entry, path, its directory) for node and, for a directory, what it holds."""
        base = node.path
        if not isinstance(node, Directory):
            yield node, base, node.parent
            return
        stack: list[tuple[Directory, str]] = [(node, base.rstrip("/"))]
        while stack:
            directory, prefix = stack.pop()
            for name in directory.sorted_names():
                child = directory.children[name]
                child_path = f"{prefix}/{name}"
                yield child, child_path, directory
                if recursive and isinstance(child, Directory):
                    stack.append((child, child_path))

    # -- directories and metadata ---------------------------------------------------

    def mkdir(self, creds: Credentials, namespace: str, path: str, mode: int) -> EntryView:
        ns = self.namespace(namespace)
        names = split_path(path)
        if not names:
            raise BrokerError(errno.EEXIST, "", path)
        with self._lock:
            parent = ns.tree.lookup_parent(names, creds, path)
            if parent.taken(names[-1]):
                raise BrokerError(errno.EEXIST, "", path)
            require(parent, creds, W_OK | X_OK, path)
            mode &= 0o7777
            if parent.mode & stat.S_ISGID:
                mode |= stat.S_ISGID
            directory = Directory(next(self._ids), mode, creds.uid, new_entry_gid(parent, creds))
            parent.link(names[-1], directory)
            self._emit(EventKind.CREATED, directory, path, parent, ns.name)
            view = self._view(directory, ns.name)
        log.info("directory created: %s:%s mode %04o uid %d", ns.name, path, mode, creds.uid)
        return view

    def rmdir(self, creds: Credentials, namespace: str, path: str) -> None:
        ns = self.namespace(namespace)
        names = split_path(path)
        if not names:
            raise BrokerError(errno.EBUSY, "the root directory cannot be removed", path)
        with self._lock:
            parent, node = ns.tree.lookup_removable(names, creds, path)
            if not isinstance(node, Directory):
                raise BrokerError(errno.ENOTDIR, "", path)
            if node.children or node.pending:
                raise BrokerError(errno.ENOTEMPTY, "", path)
            parent.unlink(names[-1])
            self._generation += 1
            self._emit(EventKind.UNLINKED, node, path, parent, ns.name)
        log.info("directory removed: %s:%s", ns.name, path)

    def rename(self, creds: Credentials, namespace: str, src: str, dst_namespace: str, dst: str) -> EntryView:
        """rename(2) within one namespace: replaces a compatible destination, EXDEV across namespaces."""
        ns = self.namespace(namespace)
        if dst_namespace and dst_namespace != ns.name:
            self.namespace(dst_namespace)
            raise BrokerError(errno.EXDEV, f"cannot rename from namespace {ns.name!r} to {dst_namespace!r}", src)
        src_names, dst_names = split_path(src), split_path(dst)
        if not src_names or not dst_names:
            raise BrokerError(errno.EBUSY, "the root directory cannot be renamed", src if not src_names else dst)
        with self._lock:
            src_parent = ns.tree.lookup_parent(src_names, creds, src)
            node = src_parent.children.get(src_names[-1])
            if node is None:
                raise BrokerError(errno.ENOENT, "", src)
            check_slash(node, src)
            check_slash(node, dst)
            dst_parent = ns.tree.lookup_parent(dst_names, creds, dst)
            existing = dst_parent.children.get(dst_names[-1])
            if existing is node:
                return self._view(node, ns.name)  # rename(2) of a name onto itself does nothing
            require(src_parent, creds, W_OK | X_OK, src)
            require(dst_parent, creds, W_OK | X_OK, dst)
            if isinstance(node, Directory) and (dst_parent is node or node in dst_parent.ancestors()):
                raise BrokerError(errno.EINVAL, "cannot move a directory into itself", dst)
            require_sticky(src_parent, node, creds, src)
            if dst_names[-1] in dst_parent.pending:
                raise BrokerError(errno.EBUSY, "the destination is being created", dst)
            if existing is not None:
                self._check_replace(node, existing, dst)
                require_sticky(dst_parent, existing, creds, dst)
            if isinstance(node, Directory) and dst_parent is not src_parent:
                require(node, creds, W_OK, src)
            src_parent.unlink(src_names[-1])
            if existing is not None:
                dst_parent.unlink(dst_names[-1])
                if isinstance(existing, Region):
                    self._unlinked_locked(existing, dst, dst_parent)
                else:
                    self._emit(EventKind.UNLINKED, existing, dst, dst_parent, ns.name)
            dst_parent.link(dst_names[-1], node)
            self._generation += 1
            self._emit(EventKind.RENAMED, node, dst, dst_parent, ns.name, old=(src, src_parent))
            view = self._view(node, ns.name)
        log.info("renamed: %s:%s -> %s", ns.name, src, dst)
        return view

    def chmod(self, creds: Credentials, namespace: str, path: str, mode: int) -> EntryView:
        ns = self.namespace(namespace)
        names = split_path(path)
        with self._lock:
            node = ns.tree.lookup(names, creds, path)
            require_owner(node, creds, path)
            mode &= 0o7777
            if not creds.is_root and not creds.in_group(node.gid):
                mode &= ~stat.S_ISGID
            node.mode = mode
            self._generation += 1
            view = self._view(node, ns.name)
        log.info("mode changed: %s:%s %04o", ns.name, path, mode)
        return view

    def chown(self, creds: Credentials, namespace: str, path: str, uid: int, gid: int) -> EntryView:
        ns = self.namespace(namespace)
        names = split_path(path)
        for value, what in ((uid, "uid"), (gid, "gid")):
            if not -1 <= value <= MAX_ID:
                raise BrokerError(errno.EINVAL, f"{what} {value} is out of range", path)
        with self._lock:
            node = ns.tree.lookup(names, creds, path)
            if not creds.is_root:
                raise BrokerError(errno.EPERM, "only root may change owners", path)
            if uid != -1:
                node.uid = uid
            if gid != -1:
                node.gid = gid
            self._generation += 1
            view = self._view(node, ns.name)
        log.info("owner changed: %s:%s %d:%d", ns.name, path, view.uid, view.gid)
        return view

    def stat(self, creds: Credentials, namespace: str, path: str) -> EntryView:
        ns = self.namespace(namespace)
        names = split_path(path)
        with self._lock:
            return self._view(ns.tree.lookup(names, creds, path), ns.name)

    def listdir(
        self, creds: Credentials, namespace: str, path: str, page_size: int = 0, after: str = ""
    ) -> tuple[list[EntryView], str]:
        """One page of a directory, sorted by name, starting after the name `after`; and the next token."""
        ns = self.namespace(namespace)
        names = split_path(path)
        if page_size < 0:
            raise BrokerError(errno.EINVAL, "page size must not be negative", path)
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        with self._lock:
            node = ns.tree.lookup(names, creds, path)
            if not isinstance(node, Directory):
                raise BrokerError(errno.ENOTDIR, "", path)
            require(node, creds, R_OK, path)
            ordered = node.sorted_names()
            first = bisect_right(ordered, after) if after else 0
            page = ordered[first : first + limit]
            views = [self._view(node.children[name], ns.name) for name in page]
        more = first + limit < len(ordered)
        return views, page[-1] if more and page else ""

    # -- counts for metrics and tests ----------------------------------------------

    def region_count(self) -> int:
        return len(self._regions)

    def watch_count(self) -> int:
        return len(self._watchers)

    def arena_stats(self) -> tuple[int, int, int]:
        """(size, free bytes, largest free gap) of the arena, read consistently."""
        with self._lock:
            return self.space.arena_size, self.space.free_bytes, self.space.largest_free

    def stats(self) -> BrokerStats:
        """Gauges and counters, read from the live state (metrics never drift from it).

        Resident bytes come from the kernel (one fstat per region); the lock is
        taken per chunk of regions so a scrape of a large table never stalls
        the session loop for long.
        """
        stats = BrokerStats({name: {state: [0, 0] for state in State} for name in self._namespaces})
        for name in self._namespaces:
            stats.attachments[name] = {access: 0 for access in Access}
            stats.resident[name] = 0
            stats.pagetable_saved[name] = 0
        with self._lock:
            regions = list(self._regions.values())
            stats.sessions = len(self._sessions)
            for session in self._sessions.values():
                for attachment in session.attachments.values():
                    stats.attachments[attachment.region.namespace][attachment.access] += 1
        for first in range(0, len(regions), STATS_CHUNK):
            with self._lock:
                for region in regions[first : first + STATS_CHUNK]:
                    if region.backing is None:
                        continue  # freed since the list was taken
                    entry = stats.regions[region.namespace][region.state]
                    entry[0] += 1
                    entry[1] += region.size
                    stats.resident[region.namespace] += region.backing.resident_bytes()
                    stats.pagetable_saved[region.namespace] += pagetable_bytes(
                        PagePolicy.SMALL, region.start, region.size, region.attach_count
                    ) - pagetable_bytes(region.policy, region.start, region.size, region.attach_count)
        return stats

    def regions_snapshot(self) -> list[EntryView]:
        with self._lock:
            return [self._view(region, region.namespace) for region in self._regions.values()]

    # -- internals (lock held) ------------------------------------------------------

    def _check_geometry(self, ns: Namespace, path: str, size: int, start: int, policy: PagePolicy) -> int:
        """EINVAL for what no placement could fix; returns the alignment this region needs."""
        if policy not in self.policies:
            available = ", ".join(sorted(p.value for p in self.policies))
            raise BrokerError(
                errno.EINVAL, f"page policy {policy.value} is not available on this broker (available: {available})", path
            )
        alignment = max(ns.alignment, policy.huge_page_bytes)
        what = "alignment" if alignment == ns.alignment else f"{policy.value} page size"
        if size <= 0 or size % alignment:
            raise BrokerError(errno.EINVAL, f"size {size} is not a positive multiple of the {what} {alignment}", path)
        if start < 0 or start % alignment:
            raise BrokerError(errno.EINVAL, f"start {start:#x} is not a multiple of the {what} {alignment:#x}", path)
        if start:
            self.space.check_named(start, size)
        return alignment

    @staticmethod
    def _check_replace(node: Node, existing: Node, dst: str) -> None:
        if isinstance(node, Directory):
            if not isinstance(existing, Directory):
                raise BrokerError(errno.ENOTDIR, "", dst)
            if existing.children or existing.pending:
                raise BrokerError(errno.ENOTEMPTY, "", dst)
        elif isinstance(existing, Directory):
            raise BrokerError(errno.EISDIR, "", dst)

    def _attach_locked(self, session: SessionRecord, region: Region, access: Access, path: str) -> Handoff:
        assert region.backing is not None
        try:
            fd = region.backing.fd_for(access)
        except OSError as exc:
            raise BrokerError.from_os_error(exc, "cannot open the region's memfd", path) from None
        attachment = _new_tuple(Attachment, (next(self._ids), region, access))
        session.attachments[attachment.id] = attachment
        region.attach_count += 1
        if self._watchers:
            self._emit(EventKind.ATTACHED, region, path, region.parent, session_id=session.id, access=access)
        return _new_tuple(
            Handoff, (attachment.id, region.id, region.namespace, path, region.start, region.size, region.policy, access, fd)
        )

    def _detach_locked(self, session: SessionRecord, attachment_ids: Iterable[int]) -> None:
        for attachment_id in attachment_ids:
            attachment = session.attachments.pop(attachment_id, None)
            if attachment is None:
                continue
            region = attachment.region
            region.attach_count -= 1
            if self._watchers:
                path = region.path or region.last_path
                self._emit(EventKind.DETACHED, region, path, region.parent, session_id=session.id, access=attachment.access)
            if region.attach_count == 0 and region.state is _UNLINKED:
                self._free_locked(region)

    def _unlinked_locked(self, region: Region, path: str, parent: Directory) -> None:
        region.state = State.UNLINKED
        self._generation += 1
        region.last_path = path
        self._emit(EventKind.UNLINKED, region, path, parent)
        log.info("region unlinked: %s:%s id %d, %d attachments", region.namespace, path, region.id, region.attach_count)
        if region.attach_count == 0:
            self._free_locked(region)

    def _free_locked(self, region: Region) -> None:
        del self._regions[region.id]
        self.space.release(region.start, region.size)
        backing, region.backing = region.backing, None
        if backing is not None:
            backing.close()
        self.freed_total[region.namespace] += 1
        self._emit(EventKind.FREED, region, region.last_path, None)
        log.info(
            "region freed: %s:%s id %d start %#x size %d",
            region.namespace,
            region.last_path,
            region.id,
            region.start,
            region.size,
        )

    def _emit(
        self,
        kind: EventKind,
        node: Node,
        path: str,
        parent: Directory | None,
        namespace: str = "",
        *,
        old: tuple[str, Directory] | None = None,
        session_id: int = 0,
        access: Access | None = None,
    ) -> None:
        """Queue an event for every watcher it concerns and that may see it (lock held).

        A rename is RENAMED only to a watcher that may see both ends; one that
        sees only the old end gets UNLINKED there, one that sees only the new
        end CREATED there, so no watcher learns a path it could not list.
        """
        if not self._watchers:
            return
        namespace = node.namespace if isinstance(node, Region) else namespace
        entry = None
        for watcher in self._watchers.values():
            sees_new = watcher.wants(namespace, path, parent, node.uid)
            sees_old = old is not None and watcher.wants(namespace, old[0], old[1], node.uid)
            if not (sees_new or sees_old):
                continue
            entry = entry or self._view(node, namespace)
            if old is None or (sees_new and sees_old):
                event = Event(kind, namespace, path, entry, old[0] if old else "", session_id, access)
            elif sees_new:
                event = Event(EventKind.CREATED, namespace, path, entry)
            else:  # the entry as it was at the end this watcher sees: its new path is none of its business
                event = Event(EventKind.UNLINKED, namespace, old[0], dataclasses.replace(entry, path=old[0]))
            if watcher.push(event):
                self.watches_dropped_total += 1
                log.warning(
                    "watch %d of session %d dropped: more than %d events behind", watcher.id, watcher.session_id, QUEUE_LIMIT
                )

    def _attachment_view(self, attachment: Attachment) -> AttachmentView:
        region = attachment.region
        return AttachmentView(attachment.id, region.id, region.namespace, region.path, attachment.access)

    @staticmethod
    def _view(node: Node, namespace: str) -> EntryView:
        if isinstance(node, Region):
            return EntryView(
                node.id,
                namespace,
                node.path,
                False,
                node.start,
                node.size,
                node.mode,
                node.uid,
                node.gid,
                node.policy,
                node.attach_count,
                node.state,
                node.created_ns,
            )
        return EntryView(node.id, namespace, node.path, True, 0, 0, node.mode, node.uid, node.gid, None, 0, None, node.created_ns)
