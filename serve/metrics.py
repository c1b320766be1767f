"""Prometheus metrics of one app (its own registry, so several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("detrdistill_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("detrdistill_request_latency_seconds", "HTTP request latency by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("detrdistill_requests_in_flight", "requests being handled", registry=self.registry)
        self.batch_size = Histogram("detrdistill_batch_size", "images per model call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.queue_depth = Gauge("detrdistill_queue_depth", "images waiting for the model", registry=self.registry)
        self.images = Counter("detrdistill_images", "images run through the model", registry=self.registry)
        self.model = Info("detrdistill_model", "the served model", registry=self.registry)
