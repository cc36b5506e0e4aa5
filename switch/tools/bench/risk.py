"""Benchmark the risk stage: its median cost per authorization with the demo config's rules.

Two numbers, because they answer two questions:

* **rules**: building a payment's facts (keyed PAN hash, BIN, customer) and evaluating every
  rule against an in-memory SQLite ledger: the stage's own work, what the 50 µs target of
  issue 11 is about;
* **journalled**: the whole `RiskStage.evaluate` through the journal's group-commit writer on
  a SQLite file (counters, decision, durable commit), one payment at a time: what an
  authorization waits for, dominated by the commit.

    kswitch-bench-risk                   # 2000 payments, rotating over 50 cards and 20 IPs
    kswitch-bench-risk --payments 10000 --config config/kswitch.toml

Not a test; numbers depend on the machine and the disk.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task

from switch.domain.cardcheck import luhn_valid
from switch.domain.currency import by_alpha
from switch.domain.customer import Customer
from switch.domain.model import AuthorizeRequest, CardInstrument
from switch.engine.risk import RiskStage
from switch.engine.risk.stage import decide
from switch.journal import JournalConfig, open_journal
from switch.journal.db import Db
from switch.journal.risk import RiskLedger
from switch.journal.schema import migrate
from switch.journal.sqlite import SQLiteDialect, _dict_row
from switch.observe.logs import configure
from switch.ops.config import DEFAULT_CONFIG, load_config
from switch.tools.bench.journal import keys


def cards(count: int) -> list[str]:
    found, n = [], 0
    while len(found) < count:
        pan = f"4{n:014d}"
        pan += next(d for d in "0123456789" if luhn_valid(pan + d))
        found.append(pan)
        n += 1
    return found


def requests(count: int) -> list[AuthorizeRequest]:
    usd = by_alpha("USD")
    assert usd is not None
    pans = cards(50)
    return [AuthorizeRequest("M100", "web", f"o-{i}", 1000 + i % 500, usd, True, CardInstrument(pans[i % 50], "3012"),
                             customer=Customer(id=f"c-{i % 30}", ip=f"203.0.113.{i % 20}", device_id=f"d-{i % 40}"))
            for i in range(count)]


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def run(reactor, args: argparse.Namespace) -> None:
    rules = load_config(args.config).risk
    directory = Path(tempfile.mkdtemp(prefix="kswitch-bench-risk-"))
    ring, secret = keys(directory)
    config = JournalConfig(backend="sqlite", sqlite_path=directory / "journal.sqlite3", pan_keys=ring,
                           pan_hash_secret=secret)
    journal = await open_journal(config, reactor, registry=CollectorRegistry())
    try:
        stage = RiskStage(reactor, journal, rules, CollectorRegistry())
        reqs = requests(args.payments)
        db = _memory_db()
        rule_times = []
        for i, req in enumerate(reqs):
            start = time.perf_counter()
            facts = stage.facts(req)
            decide(stage.rules, facts, reactor.seconds(), f"b{i}")(RiskLedger(db, int(reactor.seconds() * 1e6)))
            rule_times.append(time.perf_counter() - start)
        journalled = []
        for i, req in enumerate(reqs):
            start = time.perf_counter()
            await stage.evaluate(f"j{i}", stage.facts(req))
            journalled.append(time.perf_counter() - start)
        print(f"risk stage, {len(stage.rules.rules)} rules from {args.config}, {args.payments} payments:", file=sys.stdout)
        print(f"  rules      median {median_us(rule_times):8.1f} µs per authorization (facts + every rule, "
              "in-memory ledger)", file=sys.stdout)
        print(f"  journalled median {median_us(journalled):8.1f} µs per authorization (evaluate with durable "
              "commit, SQLite)", file=sys.stdout)
    finally:
        await journal.close()


def _memory_db() -> Db:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = _dict_row
    db = Db(conn, SQLiteDialect())
    migrate(db)
    return db


def main() -> int:
    parser = argparse.ArgumentParser(prog="kswitch-bench-risk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="whose [risk] rules to measure")
    args = parser.parse_args()
    configure("json", level="warning")
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))
    return 0
