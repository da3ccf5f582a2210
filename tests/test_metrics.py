"""Metrics from a live broker: they follow regions, attachments and sessions, and promtool accepts them."""

from __future__ import annotations

import errno
import os
import signal
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

import mshare

from .conftest import BrokerProcess, python_child, require_tool, wait_for

MiB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


def samples(broker: BrokerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(broker.scrape())
        for sample in family.samples
    }


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scrape[(name, tuple(sorted(labels.items())))]


def test_every_spec_metric_is_exported_even_at_zero(broker: BrokerProcess) -> None:
    scrape = samples(broker)
    names = {name for name, _ in scrape}
    for name in (
        "mshare_namespaces",
        "mshare_sessions",
        "mshare_sessions_reclaimed_total",
        "mshare_address_conflicts_total",
        "mshare_rpc_duration_seconds_count",
    ):
        assert name in names, name
    for state in ("active", "unlinked"):
        assert value(scrape, "mshare_regions", namespace="default", state=state) == 0
        assert value(scrape, "mshare_region_bytes", namespace="default", state=state) == 0
    for access in ("ro", "rw"):
        assert value(scrape, "mshare_attachments", namespace="default", access=access) == 0
    for result in ("ok", "failed"):
        assert value(scrape, "mshare_handoffs_total", result=result) == 0
    assert value(scrape, "mshare_resident_bytes", namespace="default") == 0
    assert value(scrape, "mshare_regions_freed_total", namespace="default") == 0
    assert value(scrape, "mshare_pagetable_bytes_saved", namespace="default") == 0
    assert value(scrape, "mshare_rpc_requests_total", method="CreateRegion", code="ALREADY_EXISTS") == 0
    assert not any("pid" in dict(labels) or "path" in dict(labels) for _, labels in scrape)


def test_metrics_follow_the_life_of_regions(broker: BrokerProcess) -> None:
    with broker.connect() as ns:
        region = ns.create("/watched", size=4 * MiB)
        scrape = samples(broker)
        assert value(scrape, "mshare_regions", namespace="default", state="active") == 1
        assert value(scrape, "mshare_region_bytes", namespace="default", state="active") == 4 * MiB
        assert value(scrape, "mshare_attachments", namespace="default", access="rw") == 1
        assert value(scrape, "mshare_sessions") == 1
        # Counted once the send has returned, which the reply can outrun: a scrape may come just before.
        assert wait_for(lambda: value(samples(broker), "mshare_handoffs_total", result="ok") == 1)
        assert value(scrape, "mshare_resident_bytes", namespace="default") == 0  # nothing touched yet

        region.buf[0 : 3 * PAGE : PAGE] = b"\1\1\1"  # touch exactly three pages
        reader = ns.open("/watched", readonly=True)
        scrape = samples(broker)
        assert value(scrape, "mshare_resident_bytes", namespace="default") == 3 * PAGE  # from the kernel
        assert value(scrape, "mshare_attachments", namespace="default", access="ro") == 1

        ns.unlink("/watched")
        scrape = samples(broker)
        assert value(scrape, "mshare_regions", namespace="default", state="active") == 0
        assert value(scrape, "mshare_regions", namespace="default", state="unlinked") == 1
        assert value(scrape, "mshare_region_bytes", namespace="default", state="unlinked") == 4 * MiB

        reader.close()
        region.close()
        ns.stat("/")  # a call of the session: it observes both detaches
        scrape = samples(broker)
        assert value(scrape, "mshare_regions", namespace="default", state="unlinked") == 0
        assert value(scrape, "mshare_regions_freed_total", namespace="default") == 1
        assert value(scrape, "mshare_attachments", namespace="default", access="rw") == 0
        assert value(scrape, "mshare_resident_bytes", namespace="default") == 0


def test_rpc_metrics_count_calls_by_method_and_code(broker: BrokerProcess) -> None:
    with broker.connect() as ns:
        before = samples(broker)
        ns.mkdir("/d")
        with pytest.raises(FileExistsError):
            ns.mkdir("/d")
        with pytest.raises(FileNotFoundError):
            ns.stat("/missing")
        after = samples(broker)
    for method, code, delta in (
        ("CreateDirectory", "OK", 1),
        ("CreateDirectory", "ALREADY_EXISTS", 1),
        ("GetEntry", "NOT_FOUND", 1),
    ):
        key = ("mshare_rpc_requests_total", (("code", code), ("method", method)))
        assert after[key] - before[key] == delta, (method, code)
    count = ("mshare_rpc_duration_seconds_count", (("method", "CreateDirectory"),))
    assert after[count] - before[count] == 2


def test_address_conflicts_and_reclaimed_sessions(broker: BrokerProcess) -> None:
    with broker.connect() as ns:
        taken = ns.create("/taken", size=2 * MiB, mode=0o666)
        with pytest.raises(OSError) as caught:
            ns.create("/other", size=2 * MiB, start=taken.start)
        assert caught.value.errno == errno.EADDRINUSE
        child = python_child(
            "import mshare, sys\nns = mshare.connect()\nr = ns.open('/taken')\n"
            "print('ready', flush=True)\nsys.stdin.readline()\n",
            env={"MSHARE_RUN_DIR": str(broker.run_dir)},
            stdin=subprocess.PIPE,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert value(samples(broker), "mshare_sessions") == 2
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert wait_for(lambda: value(samples(broker), "mshare_sessions") == 1)
        scrape = samples(broker)
        assert value(scrape, "mshare_sessions_reclaimed_total") == 1
        assert value(scrape, "mshare_address_conflicts_total") == 1
        taken.close()


def test_promtool_accepts_a_live_scrape(broker: BrokerProcess) -> None:
    promtool = require_tool("promtool", "Debian package prometheus")
    with broker.connect() as ns, ns.create("/scraped", size=2 * MiB) as region, ns.open("/scraped", readonly=True):
        region.buf[0] = 1
        ns.stat("/scraped")
        scrape = broker.scrape()
    result = subprocess.run([promtool, "check", "metrics"], input=scrape, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_namespaces_and_capacity(broker: BrokerProcess) -> None:
    with mshare.connect(run_dir=broker.run_dir) as ns:
        scrape = samples(broker)
        assert value(scrape, "mshare_namespaces") == 1
        assert value(scrape, "mshare_region_capacity") == pytest.approx(ns.info().region_capacity, abs=8)
        assert value(scrape, "mshare_arena_free_bytes") == ns.info().arena_size
