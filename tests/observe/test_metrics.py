"""The reactor thread's metric kinds (`switch.observe.metrics`): /metrics shows exactly what prometheus_client's
own would for the same changes, and a change takes no lock."""

from __future__ import annotations

import math

import prometheus_client
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from switch.bank.mux import MuxMetrics
from switch.gateway.metrics import ApiMetrics
from switch.journal.metrics import JournalMetrics
from switch.observe import metrics
from switch.observe.metrics import LATENCY_BUCKETS

amounts = st.floats(min_value=0, max_value=100, allow_nan=False) | st.sampled_from(LATENCY_BUCKETS)
changes = st.lists(st.tuples(st.sampled_from(["a", "b"]), amounts), max_size=40)


def _exposed(kinds: object, changes: list[tuple[str, float]], gauge_changes: list[float]) -> str:
    registry = CollectorRegistry()
    counter = kinds.Counter("k_things", "Things.", ["side"], registry=registry)
    histogram = kinds.Histogram("k_seconds", "Seconds.", ["side"], buckets=LATENCY_BUCKETS, registry=registry)
    gauge = kinds.Gauge("k_level", "Level.", registry=registry)
    for side, amount in changes:
        counter.labels(side).inc(amount)
        histogram.labels(side).observe(amount)
    for amount in gauge_changes:
        gauge.inc(amount)
        gauge.dec(amount / 2)
    if gauge_changes:
        gauge.set(gauge_changes[-1])
    return generate_latest(registry).decode()


@given(changes, st.lists(amounts, max_size=10))
def test_metrics_show_what_prometheus_clients_own_would(changes: list[tuple[str, float]], levels: list[float]) -> None:
    assert _exposed(metrics, changes, levels) == _exposed(prometheus_client, changes, levels)


def test_an_observation_on_a_bucket_bound_falls_in_that_bucket_and_nan_in_none() -> None:
    registry = CollectorRegistry()
    histogram = metrics.Histogram("k_seconds", "Seconds.", buckets=(0.1, 1.0), registry=registry)
    histogram.observe(0.1)
    histogram.observe(math.nan)
    assert registry.get_sample_value("k_seconds_bucket", {"le": "0.1"}) == 1
    assert registry.get_sample_value("k_seconds_count") == 1


def test_misuse_fails_as_with_prometheus_client() -> None:
    registry = CollectorRegistry()
    counter = metrics.Counter("k_things", "Things.", ["side"], registry=registry)
    histogram = metrics.Histogram("k_seconds", "Seconds.", ["side"], registry=registry)
    with pytest.raises(ValueError, match="missing label values"):
        counter.inc()
    with pytest.raises(ValueError, match="missing label values"):
        histogram.observe(1.0)
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("a").inc(-1)


def test_an_exemplar_is_kept_as_prometheus_client_keeps_it() -> None:
    registry = CollectorRegistry()
    counter = metrics.Counter("k_things", "Things.", registry=registry)
    counter.inc(2, exemplar={"txn": "t1"})
    assert registry.get_sample_value("k_things_total") == 2
    assert counter._value.get_exemplar().labels == {"txn": "t1"}


def test_the_hot_paths_metrics_take_no_lock() -> None:
    registry = CollectorRegistry()
    api, mux, journal = ApiMetrics.on(registry), MuxMetrics.on(registry), JournalMetrics.on(registry)
    values = [api.requests.labels("authorize", "approved")._value, mux.response_seconds.labels("bank")._sum,
              *mux.response_seconds.labels("bank")._buckets, api.in_flight._value,
              journal.writes.labels("sqlite", "committed")._value, journal.write_seconds.labels("sqlite")._sum,
              *journal.batch_size.labels("sqlite")._buckets]
    assert values and all(not hasattr(value, "_lock") for value in values)


def test_a_childs_changes_never_fall_back_to_prometheus_clients_locked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def locked(*_: object, **__: object) -> None:
        raise AssertionError("fell back to prometheus_client's own code")

    for kind, method in ((prometheus_client.Counter, "inc"), (prometheus_client.Gauge, "inc"),
                         (prometheus_client.Gauge, "dec"), (prometheus_client.Gauge, "set"),
                         (prometheus_client.Histogram, "observe")):
        monkeypatch.setattr(kind, method, locked)
    registry = CollectorRegistry()
    metrics.Counter("k_things", "Things.", ["side"], registry=registry).labels("a").inc(2)
    gauge = metrics.Gauge("k_level", "Level.", registry=registry)
    gauge.inc(3)
    gauge.dec(1)
    gauge.set(5)
    metrics.Histogram("k_seconds", "Seconds.", ["side"], buckets=(0.1, 1.0), registry=registry).labels("a").observe(0.5)
    assert registry.get_sample_value("k_things_total", {"side": "a"}) == 2
    assert registry.get_sample_value("k_level") == 5
    assert registry.get_sample_value("k_seconds_bucket", {"side": "a", "le": "1.0"}) == 1
