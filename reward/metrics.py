"""The reward service's metrics, kept once and read two ways: Prometheus text (`GET /metrics`, what
Ray Serve, vLLM and OpenRLHF users scrape) and a JSON snapshot (`GET /stats`, the tests and the
benchmarks). Every update goes through `inc` / `observe_*`, so the two views cannot disagree.
"""

from __future__ import annotations

import collections

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

COUNTERS = {
    "requests": "score requests received",
    "items": "(question, solution) items received",
    "batches": "batches sent to verifier replicas",
    "cache_hits": "items answered from the score cache",
    "dedup_hits": "items joined to an identical item already in flight",
    "retried_batches": "batches re-sent after their replica died",
    "failed_batches": "batches the verifier rejected or could not score",
    "replica_deaths": "verifier replicas that died",
    "replica_restarts": "replacement replicas started",
    "replicas_started": "verifier replica actors created (at start and as replacements)",
    "loop_restarts": "restarts of the router's batching loop",
    "rejected_overload": "requests refused because the queue was full",
    "failed_health_checks": "replica health checks that failed or timed out",
}
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    def __init__(self):
        self.counters: collections.Counter = collections.Counter()
        self.latency: collections.deque = collections.deque(maxlen=10_000)
        self.batch_sizes: collections.deque = collections.deque(maxlen=10_000)
        self.registry = CollectorRegistry()
        self._prom = {name: Counter(f"genrm_{name}", text, registry=self.registry) for name, text in COUNTERS.items()}
        self._errors = Counter("genrm_errors", "requests answered with an error, by HTTP status", ["status"],
                               registry=self.registry)
        self._latency = Histogram("genrm_request_latency_seconds", "time to answer a score request",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self._batch = Histogram("genrm_batch_size", "items per batch sent to a replica", buckets=BATCH_BUCKETS,
                                registry=self.registry)
        self._replica_seconds = Counter("genrm_replica_busy_seconds", "time replicas spent scoring batches",
                                        registry=self.registry)
        self._gauges = {name: Gauge(f"genrm_{name}", text, registry=self.registry) for name, text in (
            ("queued_items", "items waiting for a batch"), ("replicas_alive", "live verifier replicas"),
            ("replicas", "configured verifier replicas"), ("inflight_batches", "batches being scored"),
            ("cache_entries", "scores in the cache"))}

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] += n
        self._prom[name].inc(n)

    def error(self, status: int) -> None:
        self.counters[f"errors_{status}"] += 1
        self._errors.labels(status=str(status)).inc()

    def observe_latency(self, seconds: float) -> None:
        self.latency.append(seconds)
        self._latency.observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.counters["batches"] += 1
        self._prom["batches"].inc()
        self.batch_sizes.append(size)
        self._batch.observe(size)
        self.counters["replica_seconds_x1000"] += int(seconds * 1000)
        self._replica_seconds.inc(seconds)

    def snapshot(self) -> dict:
        lat = sorted(self.latency)

        def pct(p):
            return None if not lat else lat[min(len(lat) - 1, int(p * len(lat)))]

        sizes = list(self.batch_sizes)
        return {**self.counters, "latency_p50_s": pct(0.5), "latency_p99_s": pct(0.99),
                "batch_size_mean": sum(sizes) / len(sizes) if sizes else None,
                "batch_size_max": max(sizes) if sizes else None}

    def prometheus(self, gauges: dict[str, float]) -> str:
        for name, value in gauges.items():
            self._gauges[name].set(value)
        return generate_latest(self.registry).decode()
