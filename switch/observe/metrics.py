"""Prometheus metric bundles, and the metric kinds of the reactor thread.

Each component declares its metrics as a `MetricBundle` subclass and gets the
bundle with ``Bundle.on(registry)``. A bundle is created once per registry, so
many links or connectors share one set of labelled metrics, and every switch
instance (or test) can use its own `CollectorRegistry` without name clashes.

`Counter`, `Gauge` and `Histogram` here are prometheus_client's, exposed the same way, for metrics that
only the reactor thread changes (the socket API, the engine, the bank links, the journal's counts of its
batches): their values take no lock. prometheus_client guards each value with a mutex, so an increment cost
about 0.9 µs and an observation 2.2 µs (two locks and a loop over the buckets), some 4 % of the reactor's
time per payment in the closed loop, for metrics no other thread touches (/metrics is rendered on the
reactor too). A metric that another thread changes must keep prometheus_client's own classes.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from typing import Any, ClassVar, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

# The *_created series double every counter's size on /metrics and no dashboard of ours uses them.
disable_created_metrics()

B = TypeVar("B", bound="MetricBundle")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class MetricBundle:
    """Base for a set of metrics registered together on one registry."""

    _instances: ClassVar[weakref.WeakKeyDictionary]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._instances = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, kept: ``.labels()`` takes a lock and builds a key on every
        call, and the hot path counts a few metrics per request. Label values must be bounded."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    @classmethod
    def on(cls: type[B], registry: CollectorRegistry) -> B:
        bundle = cls._instances.get(registry)
        if bundle is None:
            bundle = cls(registry)
            cls._instances[registry] = bundle
        return bundle


class _Unlocked:
    """`prometheus_client.values.MutexValue`'s interface without its mutex: a value only the reactor thread
    changes, read by the reactor thread when /metrics is rendered."""

    __slots__ = ("value", "_exemplar")

    def __init__(self) -> None:
        self.value = 0.0
        self._exemplar: Any = None

    def inc(self, amount: float) -> None:
        self.value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self.value = value

    def get(self) -> float:
        return self.value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get_exemplar(self) -> Any:
        return self._exemplar


class Counter(prometheus_client.Counter):
    """prometheus_client's counter, changed on the reactor thread only (see the module docstring)."""

    def _metric_init(self) -> None:  # run for an observable metric only: a child, or one without labels
        super()._metric_init()
        self._value = _Unlocked()

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        if amount >= 0 and not exemplar:
            try:
                self._value.value += amount  # type: ignore[attr-defined]
                return
            except AttributeError:  # a labelled metric's parent has no value: prometheus_client's error
                pass
        super().inc(amount, exemplar)


class Gauge(prometheus_client.Gauge):
    """prometheus_client's gauge, changed on the reactor thread only (see the module docstring)."""

    def _metric_init(self) -> None:
        super()._metric_init()
        self._value = _Unlocked()

    def inc(self, amount: float = 1) -> None:
        try:
            self._value.value += amount  # type: ignore[attr-defined]
        except AttributeError:
            super().inc(amount)

    def dec(self, amount: float = 1) -> None:
        try:
            self._value.value -= amount  # type: ignore[attr-defined]
        except AttributeError:
            super().dec(amount)

    def set(self, value: float) -> None:
        try:
            self._value.value = float(value)  # type: ignore[attr-defined]
        except AttributeError:
            super().set(value)


class Histogram(prometheus_client.Histogram):
    """prometheus_client's histogram, changed on the reactor thread only (see the module docstring): an
    observation finds its bucket by bisection, as prometheus_client's loop would (the first upper bound
    not below it)."""

    def _metric_init(self) -> None:
        super()._metric_init()
        self._sum = _Unlocked()
        self._buckets = [_Unlocked() for _ in self._upper_bounds]  # type: ignore[misc]

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        if not exemplar and amount == amount:  # NaN goes in no bucket, as prometheus_client has it
            try:
                self._sum.value += amount  # type: ignore[attr-defined]
            except AttributeError:  # a labelled metric's parent has no sum: prometheus_client's error
                pass
            else:
                self._buckets[bisect_left(self._upper_bounds, amount)].value += 1  # type: ignore[attr-defined]
                return
        super().observe(amount, exemplar)
