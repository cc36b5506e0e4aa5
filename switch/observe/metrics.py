"""Prometheus metric bundles.

Each component declares its metrics as a `MetricBundle` subclass and gets the
bundle with ``Bundle.on(registry)``. A bundle is created once per registry, so
many links or connectors share one set of labelled metrics, and every switch
instance (or test) can use its own `CollectorRegistry` without name clashes.
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar, TypeVar

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
