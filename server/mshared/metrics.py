"""Prometheus metrics: a collector over the broker's live state, an RPC interceptor, the HTTP endpoint."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from mshare import __version__
from mshare.errors import ERRNO_CODES

from .broker import Broker
from .regions import Access, State
from .sessions import REQUEST_BUCKETS, SessionServer

log = logging.getLogger(__name__)

#: Status codes an mshare RPC can end with; their series exist from the start.
RPC_CODES: Final = ("OK", "CANCELLED", "UNKNOWN", "INTERNAL", *sorted(set(ERRNO_CODES.values())))
#: Control-plane calls are in-memory work: sub-millisecond buckets matter most.
RPC_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_STATE_LABELS: Final = {State.ACTIVE: "active", State.UNLINKED: "unlinked"}
_ACCESS_LABELS: Final = {Access.READ_ONLY: "ro", Access.READ_WRITE: "rw"}


class BrokerCollector(Collector):
    """Gauges and counters computed from the broker at scrape time, so they cannot drift."""

    def __init__(self, broker: Broker, sessions: SessionServer, region_capacity: Callable[[], int]) -> None:
        self.broker = broker
        self.sessions = sessions
        self.region_capacity = region_capacity

    def collect(self) -> Iterator[Metric]:
        broker = self.broker
        stats = broker.stats()
        info = InfoMetricFamily("mshare_build", "mshared's version.")
        info.add_metric([], {"version": __version__})
        yield info
        yield GaugeMetricFamily("mshare_namespaces", "Namespaces served.", value=len(stats.regions))
        regions = GaugeMetricFamily("mshare_regions", "Regions by state.", labels=["namespace", "state"])
        region_bytes = GaugeMetricFamily("mshare_region_bytes", "Region sizes summed, by state.", labels=["namespace", "state"])
        for namespace, by_state in sorted(stats.regions.items()):
            for state, (count, size) in by_state.items():
                regions.add_metric([namespace, _STATE_LABELS[state]], count)
                region_bytes.add_metric([namespace, _STATE_LABELS[state]], size)
        yield regions
        yield region_bytes
        resident = GaugeMetricFamily(
            "mshare_resident_bytes", "Memory the kernel has allocated for the regions.", labels=["namespace"]
        )
        saved = GaugeMetricFamily(
            "mshare_pagetable_bytes_saved",
            "Estimated page-table bytes the attachers save against 4 KiB pages (docs/design.md).",
            labels=["namespace"],
        )
        for namespace in sorted(stats.resident):
            resident.add_metric([namespace], stats.resident[namespace])
            saved.add_metric([namespace], stats.pagetable_saved[namespace])
        yield resident
        yield saved
        attachments = GaugeMetricFamily("mshare_attachments", "Live attachments by access.", labels=["namespace", "access"])
        for namespace, by_access in sorted(stats.attachments.items()):
            for access, count in by_access.items():
                attachments.add_metric([namespace, _ACCESS_LABELS[access]], count)
        yield attachments
        yield GaugeMetricFamily("mshare_sessions", "Live sessions.", value=stats.sessions)
        yield CounterMetricFamily(
            "mshare_sessions_reclaimed",
            "Sessions that ended while still holding attachments (crashes, kills).",
            value=broker.sessions_reclaimed_total,
        )
        freed = CounterMetricFamily(
            "mshare_regions_freed", "Regions freed after their last attachment ended.", labels=["namespace"]
        )
        for namespace, count in sorted(broker.freed_total.items()):
            freed.add_metric([namespace], count)
        yield freed
        requests = self.sessions.stats
        handoffs = CounterMetricFamily("mshare_handoffs", "Memfds sent to clients, by result.", labels=["result"])
        for result, count in sorted(requests.handoffs.items()):
            handoffs.add_metric([result], count)
        yield handoffs
        counts = CounterMetricFamily(
            "mshare_session_requests", "Session-channel requests by kind and status code.", labels=["kind", "code"]
        )
        for (kind, code), count in sorted(requests.counts.items()):
            counts.add_metric([kind, code], count)
        yield counts
        latency = HistogramMetricFamily(
            "mshare_session_request_duration_seconds", "Time the broker spends on a session request.", labels=["kind"]
        )
        for kind, buckets in requests.buckets.items():
            cumulative, total = [], 0
            for bound, count in zip((*map(str, REQUEST_BUCKETS), "+Inf"), buckets, strict=True):
                total += count
                cumulative.append((bound, total))
            latency.add_metric([kind], cumulative, requests.sums[kind])
        yield latency
        yield CounterMetricFamily(
            "mshare_address_conflicts",
            "Creates refused because a named start overlapped a region.",
            value=broker.address_conflicts_total,
        )
        yield GaugeMetricFamily("mshare_watches", "Open watch streams.", value=broker.watch_count())
        yield CounterMetricFamily(
            "mshare_watches_dropped", "Watch streams dropped for falling too far behind.", value=broker.watches_dropped_total
        )
        arena, free, largest = broker.arena_stats()
        yield GaugeMetricFamily("mshare_arena_bytes", "Size of the address arena.", value=arena)
        yield GaugeMetricFamily("mshare_arena_free_bytes", "Free bytes of the address arena.", value=free)
        yield GaugeMetricFamily(
            "mshare_arena_largest_free_bytes", "The largest free gap of the arena: no bigger region fits.", value=largest
        )
        yield GaugeMetricFamily(
            "mshare_region_capacity", "Regions that still fit under the descriptor limit.", value=self.region_capacity()
        )


class RpcMetrics(grpc.ServerInterceptor):  # type: ignore[misc]
    """mshare_rpc_requests_total{method,code} and mshare_rpc_duration_seconds{method}, for every call."""

    def __init__(self, registry: CollectorRegistry, methods: list[str]) -> None:
        self.requests = Counter(
            "mshare_rpc_requests", "gRPC calls by method and status code.", ["method", "code"], registry=registry
        )
        self.duration = Histogram(
            "mshare_rpc_duration_seconds", "gRPC call latency.", ["method"], buckets=RPC_BUCKETS, registry=registry
        )
        for method in methods:
            self.duration.labels(method)
            for code in RPC_CODES:
                self.requests.labels(method, code)

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1] if details.method.startswith("/mshare.") else details.method.lstrip("/")
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, method))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._streaming(handler.unary_stream, method))
        return handler

    def _record(self, method: str, context: grpc.ServicerContext, fallback: str, started: float | None) -> None:
        """Count the call under the code it ended with; fallback when the handler set none."""
        code = context.code()
        self.requests.labels(method, code.name if code is not None else fallback).inc()
        if started is not None:
            self.duration.labels(method).observe(time.perf_counter() - started)

    def _unary(self, behavior: Callable[[Any, Any], Any], method: str) -> Callable[[Any, Any], Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            outcome = "UNKNOWN"  # what gRPC sends for an exception that escapes without a code
            try:
                response = behavior(request, context)
                outcome = "OK"
                return response
            finally:
                self._record(method, context, outcome, started)

        return call

    def _streaming(self, behavior: Callable[[Any, Any], Any], method: str) -> Callable[[Any, Any], Any]:
        """Streams are counted, not timed: their length is the client's choice, not latency."""

        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            outcome = "UNKNOWN"
            try:
                yield from behavior(request, context)
                outcome = "OK"
            except GeneratorExit:
                outcome = "CANCELLED"  # the client went away
                raise
            finally:
                self._record(method, context, outcome, None)

        return call


def serve(registry: CollectorRegistry, host: str, port: int) -> tuple[Any, int]:
    """Start /metrics on host:port (0 picks a free port); returns the server and the bound port."""
    server, _ = start_http_server(port, host, registry=registry)
    bound = int(server.server_address[1])
    log.info("metrics serving on http://%s:%d/metrics", host, bound)
    return server, bound
