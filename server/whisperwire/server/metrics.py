"""Prometheus metrics of one server instance (own registry, so tests can run many servers).

Per-call metrics carry a `protocol` label (`grpc` or `http`): both fronts share the engine,
so one dashboard shows them side by side. `code` is the gRPC status name or the HTTP status.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from whisperwire.server.domain import Transcript
from whisperwire.server.engine import EngineInfo

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            "whisperwire_queue_depth", "Engine work items waiting for a batch", registry=r
        )
        self.batch_size = Histogram(
            "whisperwire_batch_size",
            "Items per engine call",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.engine_seconds = Histogram(
            "whisperwire_engine_seconds",
            "Wall time of one engine call",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "whisperwire_request_seconds",
            "Time from request (or push-to-talk release) to result",
            ["protocol", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.real_time_factor = Histogram(
            "whisperwire_real_time_factor",
            "Processing seconds per second of audio",
            ["protocol", "method"],
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=r,
        )
        self.audio_seconds = Counter(
            "whisperwire_audio_seconds",
            "Seconds of audio transcribed",
            ["protocol", "method"],
            registry=r,
        )
        self.requests = Counter(
            "whisperwire_requests",
            "Finished calls by protocol, method and code",
            ["protocol", "method", "code"],
            registry=r,
        )
        self.active_streams = Gauge(
            "whisperwire_active_streams", "Open StreamAudio calls", registry=r
        )
        self.engine = Info("whisperwire_engine", "The loaded engine and model", registry=r)

    def describe_engine(self, info: EngineInfo) -> None:
        device, _, dtype = info.device.partition("/")
        labels = {"engine": info.name, "model": info.model, "device": device}
        self.engine.info(labels | {"dtype": dtype or "default"})

    def observe_transcript(
        self, protocol: str, method: str, elapsed: float, transcript: Transcript
    ) -> None:
        """A transcript delivered `elapsed` seconds after its request arrived."""
        self.request_seconds.labels(protocol, method).observe(elapsed)
        self.audio_seconds.labels(protocol, method).inc(transcript.duration)
        if transcript.duration > 0:
            self.real_time_factor.labels(protocol, method).observe(elapsed / transcript.duration)

    def count_call(self, protocol: str, method: str, code: str) -> None:
        self.requests.labels(protocol, method, code).inc()
