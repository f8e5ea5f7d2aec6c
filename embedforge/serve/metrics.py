"""Prometheus metrics of one app: requests by endpoint and status, latency, batch sizes.

Each app gets its own :class:`prometheus_client.CollectorRegistry`, so several apps in one process
(tests, a benchmark) keep separate counts.
"""

from __future__ import annotations

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    """The counters and histograms ``GET /metrics`` exposes."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "embedforge_requests",
            "HTTP requests by endpoint, method and status code",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "embedforge_request_duration_seconds",
            "HTTP request latency by endpoint, from the first byte received to the last sent",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "embedforge_batch_size",
            "texts per encode call (one forward batch of the micro-batcher)",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "embedforge_batch_requests",
            "requests merged into one encode call",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queued = Gauge(
            "embedforge_queued_texts",
            "texts waiting for the model or in its forward pass now, all workers (503 `overloaded` past --max-queue per worker)",
            registry=self.registry,
        )
        self.tokens = Counter(
            "embedforge_prompt_tokens", "tokens read by the model, as reported in `usage`", registry=self.registry
        )

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, method=method, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_batch(self, texts: int, requests: int) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
