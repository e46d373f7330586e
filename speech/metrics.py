"""The service's Prometheus metrics (``GET /metrics``), in a registry of its own so that several servers can
live in one process (tests) without sharing counters."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)


class _LaneCollector:
    """Reads the scheduler's lanes at scrape time: queued chunks, open streams, batches and chunks run per lane
    (chunks / batches is the lane's mean batch size)."""

    def __init__(self, lanes: Callable[[], dict]) -> None:
        self.lanes = lanes

    def collect(self):
        queued = GaugeMetricFamily("speech_lane_queue_depth", "chunks waiting in a lane", labels=["lane"])
        streams = GaugeMetricFamily("speech_lane_streams", "streams holding a slot in a lane", labels=["lane"])
        batches = CounterMetricFamily("speech_lane_batches", "batches a lane has run", labels=["lane"])
        chunks = CounterMetricFamily("speech_lane_chunks", "chunks a lane has run", labels=["lane"])
        for name, lane in self.lanes().items():
            queued.add_metric([name], lane.queue_depth)
            streams.add_metric([name], lane.streams)
            batches.add_metric([name], lane.stats.batches)
            chunks.add_metric([name], lane.stats.chunks)
        yield from (queued, streams, batches, chunks)


class ServiceMetrics:
    def __init__(self, lanes: Callable[[], dict]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("speech_sessions_active", "open sessions", ["task", "model"], registry=r)
        self.sessions_total = Counter("speech_sessions", "sessions ended, by outcome", ["task", "model", "outcome"],
                                      registry=r)
        self.connections = Gauge("speech_connections_active", "open WebSocket connections", registry=r)
        self.chunk_latency = Histogram("speech_chunk_latency_seconds",
                                       "a chunk's audio arriving to its results being ready", ["lane"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.chunks = Counter("speech_chunks", "model chunks processed", ["lane"], registry=r)
        self.deadline_misses = Counter("speech_chunk_deadline_misses",
                                       "chunks whose results took longer than the chunk lasts", ["lane"], registry=r)
        self.final_latency = Histogram("speech_final_latency_seconds", "the client's end to the server's done",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.inbound_queue = Gauge("speech_connection_queue_frames", "frames read but not yet processed, all "
                                   "connections", registry=r)
        self.bytes_in = Counter("speech_bytes_in", "bytes received in WebSocket messages", registry=r)
        self.bytes_out = Counter("speech_bytes_out", "bytes sent in WebSocket messages", registry=r)
        self.errors = Counter("speech_errors", "structured errors sent, by code", ["code"], registry=r)
        r.register(_LaneCollector(lanes))

    def observe_chunks(self, lane: str, count: int, latency_s: float, budget_s: float) -> None:
        """``count`` chunks finished ``latency_s`` after their audio arrived; over ``budget_s`` is a miss."""
        self.chunks.labels(lane).inc(count)
        self.chunk_latency.labels(lane).observe(latency_s)
        if latency_s > budget_s:
            self.deadline_misses.labels(lane).inc(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
