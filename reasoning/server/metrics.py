"""``GET /metrics``: the server's Prometheus metrics (names as vLLM's, prefixed ``sambay_``).

Counted by the server as requests finish: requests by finish reason, prompt and generated
tokens, and three histograms: time to first token (arrival to the first text delta), time per
output token (first text delta to the end, over the tokens after the first) and end-to-end
latency. Read from the engine at each scrape: requests running and waiting, KV blocks free
and in total, and preemptions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..engine import Result

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

disable_created_metrics()  # no *_created series: they double the output and no dashboard reads them

_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                 20.0, 40.0, 80.0)
_TPOT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2,
                 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
_E2E_BUCKETS = (0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                480.0, 960.0, 1920.0)


class _EngineCollector(Collector):
    """Engine state, read when scraped: ``state()`` returns running, waiting, free blocks,
    total blocks and preemptions."""

    def __init__(self, state: Callable[[], dict[str, int]]) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        s = self.state()
        yield GaugeMetricFamily("sambay_num_requests_running", "Requests in the engine's running batch.",
                                value=s["running"])
        yield GaugeMetricFamily("sambay_num_requests_waiting", "Requests waiting for a place in the batch.",
                                value=s["waiting"])
        yield GaugeMetricFamily("sambay_kv_blocks_free", "Free blocks of the paged KV cache.", value=s["free_blocks"])
        yield GaugeMetricFamily("sambay_kv_blocks_total", "Blocks of the paged KV cache that requests can use.",
                                value=s["num_blocks"])
        yield CounterMetricFamily("sambay_num_preemptions", "Requests preempted when the KV blocks ran out.",
                                  value=s["preemptions"])


class Metrics:
    """The registry of one server; ``observe`` a finished request, ``render`` for a scrape."""

    def __init__(self, state: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("sambay_request_success", "Finished requests, by finish reason.", ["finished_reason"],
                                registry=r)
        self.prompt_tokens = Counter("sambay_prompt_tokens", "Prompt tokens of finished requests.", registry=r)
        self.generation_tokens = Counter("sambay_generation_tokens", "Generated tokens of finished requests.",
                                         registry=r)
        self.ttft = Histogram("sambay_time_to_first_token_seconds", "Arrival to the first text delta.",
                              buckets=_TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("sambay_time_per_output_token_seconds",
                              "First text delta to the end, per generated token after the first.",
                              buckets=_TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("sambay_e2e_request_latency_seconds", "Arrival to the end of the request.",
                             buckets=_E2E_BUCKETS, registry=r)
        r.register(_EngineCollector(state))

    def observe(self, result: Result, arrived: float, first_text: float | None, done: float) -> None:
        stats = result.stats
        self.requests.labels(stats.finish_reason).inc()
        self.prompt_tokens.inc(stats.prompt_tokens)
        self.generation_tokens.inc(stats.generated_tokens)
        self.e2e.observe(done - arrived)
        if first_text is not None:
            self.ttft.observe(first_text - arrived)
            if stats.generated_tokens > 1:
                self.tpot.observe((done - first_text) / (stats.generated_tokens - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
