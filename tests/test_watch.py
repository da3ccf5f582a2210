"""Watch streams against a real broker: snapshot, ordered events, limits, and how streams end."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

import mshare

from .conftest import ROOT, BrokerProcess, spawn
from .test_metrics import samples, value

MiB = 1 << 20


def take(watch: Iterator[mshare.Event], count: int) -> list[tuple[str, str]]:
    return [
        (event.kind, event.path) for _, event in zip(range(count), watch, strict=False)
    ]  # range first: never pull one too many


def test_snapshot_then_events_in_order(ns: mshare.Namespace) -> None:
    ns.mkdir("/app")
    ns.create("/app/a", size=2 * MiB).close()
    ns.mkdir("/app/sub")
    ns.create("/app/sub/deep", size=2 * MiB).close()
    with ns.watch("/app") as watch:
        assert take(watch, 3) == [("existing", "/app/a"), ("existing", "/app/sub"), ("synced", "/app")]
        region = ns.create("/app/b", size=2 * MiB)
        reader = ns.open("/app/b", readonly=True)
        reader.close()
        ns.rename("/app/b", "/app/c")
        ns.unlink("/app/c")
        ns.create("/app/sub/ignored", size=2 * MiB).close()  # below a subdirectory: not watched
        region.close()
        events = [next(watch) for _ in range(8)]
    assert [(e.kind, e.path) for e in events] == [
        ("created", "/app/b"),
        ("attached", "/app/b"),  # the creator's attachment
        ("attached", "/app/b"),
        ("detached", "/app/b"),
        ("renamed", "/app/c"),
        ("unlinked", "/app/c"),
        ("detached", "/app/c"),
        ("freed", "/app/c"),
    ]
    assert events[4].old_path == "/app/b"
    assert events[2].access == "ro" and events[1].access == "rw"
    assert events[2].session_id == ns.session_id
    assert events[0].stat is not None and events[0].stat.size == 2 * MiB
    assert events[5].stat is not None and events[5].stat.state == "UNLINKED"


def test_close_then_open_events_keep_their_order(ns: mshare.Namespace) -> None:
    """The broker may answer an open before serving the close sent just before it,
    but never while someone watches: the events come in the order of the calls."""
    ns.create("/r", size=2 * MiB).close()
    with ns.watch("/") as watch:
        assert take(watch, 2) == [("existing", "/r"), ("synced", "/")]
        region = ns.open("/r")
        for _ in range(50):
            region.close()
            region = ns.open("/r")
        region.close()
        kinds = [kind for kind, _ in take(watch, 102)]
    assert kinds == ["attached", "detached"] * 51


def test_recursive_watch_sees_subdirectories(ns: mshare.Namespace) -> None:
    ns.mkdir("/tree")
    ns.mkdir("/tree/x")
    ns.create("/tree/x/r", size=2 * MiB).close()
    with ns.watch("/", recursive=True) as watch:
        assert take(watch, 4) == [("existing", "/tree"), ("existing", "/tree/x"), ("existing", "/tree/x/r"), ("synced", "/")]
        ns.mkdir("/tree/x/y")
        ns.unlink("/tree/x/r")
        assert take(watch, 3) == [("created", "/tree/x/y"), ("unlinked", "/tree/x/r"), ("freed", "/tree/x/r")]


def test_watching_a_region_path(ns: mshare.Namespace) -> None:
    region = ns.create("/single", size=2 * MiB)
    ns.create("/other", size=2 * MiB).close()
    with ns.watch("/single") as watch:
        assert take(watch, 2) == [("existing", "/single"), ("synced", "/single")]
        ns.open("/other").close()
        region.close()
        assert take(watch, 1) == [("detached", "/single")]


def test_watch_errors(ns: mshare.Namespace) -> None:
    with pytest.raises(FileNotFoundError):
        next(iter(ns.watch("/missing")))
    watches = [ns.watch("/") for _ in range(4)]
    for watch in watches:
        assert take(watch, 1) == [("synced", "/")]
    with pytest.raises(OSError) as caught:
        next(iter(ns.watch("/")))
    assert caught.value.errno == errno.EMFILE
    for watch in watches:
        watch.close()
        assert list(watch) == []


def test_a_slow_consumer_is_dropped_with_a_clear_error(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    ns.create("/busy", size=2 * MiB).close()
    watch = ns.watch("/busy")
    assert take(watch, 2) == [("existing", "/busy"), ("synced", "/busy")]

    def dropped() -> float:
        return value(samples(broker), "mshare_watches_dropped_total")

    # Never read: once the transport's window is full, the broker's bounded queue fills and the watch goes.
    for _ in range(20):
        for _ in range(1000):
            ns.open("/busy").close()
        if dropped() == 1:
            break
    assert dropped() == 1
    with pytest.raises(OSError) as caught:
        for _ in watch:
            pass
    assert caught.value.errno == errno.ENOBUFS
    assert "behind" in str(caught.value)
    assert value(samples(broker), "mshare_watches") == 0
    ns.open("/busy").close()  # the broker is fine


def test_streams_end_with_their_session(broker: BrokerProcess) -> None:
    watcher, actor = broker.connect(), broker.connect()
    watch = watcher.watch("/")
    assert take(watch, 1) == [("synced", "/")]
    done: list[list[str]] = []
    reader = threading.Thread(target=lambda: done.append([e.kind for e in watch]))
    reader.start()
    actor.create("/seen", size=2 * MiB).close()
    watcher._session.close()  # type: ignore[union-attr]  # the session socket goes, as when a process dies
    reader.join(10)
    assert not reader.is_alive()
    assert done == [["created", "attached", "detached"]]
    watcher.close()
    actor.close()


def test_streams_end_at_shutdown(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker()
    ns = broker.connect()
    watch = ns.watch("/")
    assert take(watch, 1) == [("synced", "/")]
    broker.stop(signal.SIGTERM)
    assert list(watch) == []
    ns.close()


WATCHER = """
ns = mshare.connect()
watch = ns.watch("/", recursive=True)
events = []
for event in watch:
    events.append([event.kind, event.path, event.old_path])
    if event.kind == "synced":
        print("synced", flush=True)
    if event.path == "/open/public" and event.kind == "detached":
        break
print(json.dumps(events), flush=True)
"""


def test_a_watch_shows_only_what_the_watcher_may_list(ns: mshare.Namespace, broker: BrokerProcess) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the watcher as another uid")
    ns.mkdir("/open", 0o755)
    ns.mkdir("/closed", 0o700)
    child = spawn(
        [sys.executable, str(ROOT / "tests" / "dropped.py"), "65534", "65534", "", WATCHER],
        {"MSHARE_RUN_DIR": str(broker.run_dir)},
        cwd="/",
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "synced"
    ns.create("/closed/secret", size=2 * MiB).close()
    ns.rename("/closed/secret", "/open/moved")  # seen arriving, but not where from
    ns.create("/open/public", size=2 * MiB).close()
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    events = json.loads(out)
    paths = {path for _, path, old in events} | {old for _, _, old in events}
    assert {"/open", "/closed", "/open/public"} <= paths
    assert ["created", "/open/moved", ""] in events
    assert not any(path.startswith("/closed/") for path in paths)


def test_closing_the_namespace_ends_its_watches(broker: BrokerProcess) -> None:
    ns = broker.connect()
    watch = ns.watch("/")
    assert take(watch, 1) == [("synced", "/")]
    ns.close()
    assert list(watch) == []
