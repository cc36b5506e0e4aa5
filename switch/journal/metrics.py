"""Prometheus metrics of the journal and of the store-and-forward queues it holds.

Every one of them is changed on the reactor thread (a batch is counted when its outcomes are delivered there,
whichever writer ran it), so they are `switch.observe.metrics`' kinds, whose values take no lock."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry

from switch.journal.models import SafStats
from switch.observe.metrics import LATENCY_BUCKETS, Counter, Gauge, Histogram, MetricBundle

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class JournalMetrics(MetricBundle):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.commit_seconds = Histogram(
            "kswitch_journal_commit_seconds",
            "Time to run one batch of journal writes and commit it durably",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.write_seconds = Histogram(
            "kswitch_journal_write_seconds",
            "Time from a write being submitted to its commit being durable (queueing included)",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "kswitch_journal_batch_size",
            "Writes committed together in one database transaction (group commit)",
            ["backend"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.commits = Counter(
            "kswitch_journal_commits", "Database transactions committed by the journal writer", ["backend"], registry=registry
        )
        self.writes = Counter(
            "kswitch_journal_writes",
            "Journal writes by outcome: committed, refused (the write raised), failed (its batch did not commit)",
            ["backend", "outcome"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "kswitch_journal_queue_depth", "Writes waiting for the journal's writer", ["backend"], registry=registry
        )
        self.writer_in_process = Gauge(
            "kswitch_journal_writer_in_process",
            "1 while the journal's writes go to its writer process, 0 while they go to its thread (writer = auto)",
            ["backend"],
            registry=registry,
        )
        self.saf_depth = Gauge(
            "kswitch_saf_depth", "Store-and-forward items waiting to be sent", ["connector"], registry=registry
        )
        self.saf_oldest_age = Gauge(
            "kswitch_saf_oldest_age_seconds",
            "Age of the oldest store-and-forward item waiting to be sent",
            ["connector"],
            registry=registry,
        )
        self.saf_dead_letters = Gauge(
            "kswitch_saf_dead_letters",
            "Store-and-forward items that ran out of attempts and wait for an operator",
            ["connector"],
            registry=registry,
        )
        self._saf_connectors: set[str] = set()

    def set_saf(self, stats: Iterable[SafStats], now: datetime) -> None:
        """Publish queue figures; a connector missing from ``stats`` has an empty queue and reads 0."""
        seen = set()
        for item in stats:
            seen.add(item.connector)
            age = (now - item.oldest_enqueued_at).total_seconds() if item.oldest_enqueued_at else 0.0
            self.saf_depth.labels(item.connector).set(item.depth)
            self.saf_oldest_age.labels(item.connector).set(max(age, 0.0))
            self.saf_dead_letters.labels(item.connector).set(item.dead_letters)
        for connector in self._saf_connectors - seen:
            for gauge in (self.saf_depth, self.saf_oldest_age, self.saf_dead_letters):
                gauge.labels(connector).set(0)
        self._saf_connectors |= seen
