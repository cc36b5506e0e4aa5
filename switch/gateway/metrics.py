"""Prometheus metrics of the socket API.

Label values are bounded: ``op`` is a registered operation name, ``unknown`` for an
op the switch does not have, or ``invalid`` when the line could not be read as a
request at all, so a client cannot grow the metric cardinality.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from switch.observe.metrics import LATENCY_BUCKETS, Counter, Gauge, Histogram, MetricBundle


class ApiMetrics(MetricBundle):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.requests = Counter(
            "kswitch_api_requests",
            "Requests answered, by op and by the answer's status (ok for ops without one, error for ok:false).",
            ["op", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "kswitch_api_request_duration_seconds",
            "Time from reading a request line to writing its answer.",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "kswitch_api_errors",
            "Error answers by error code.",
            ["code"],
            registry=registry,
        )
        self.connections = Gauge(
            "kswitch_api_connections_open",
            "Client connections currently open.",
            registry=registry,
        )
        self.in_flight = Gauge(
            "kswitch_api_requests_in_flight",
            "Requests read but not yet answered, over all connections.",
            registry=registry,
        )
        self.held = Gauge(
            "kswitch_api_connections_held",
            "Connections not reading requests because the journal has too many writes waiting (flow control).",
            registry=registry,
        )
        self.undeliverable = Counter(
            "kswitch_api_answers_undeliverable",
            "Answers that could not be written because the client connection had closed.",
            ["op"],
            registry=registry,
        )
