"""Benchmark what the risk stage adds to an authorization: CPU, with the demo config's rules.

Issue 11's target is "with the demo rules the risk stage adds at most 50 µs median per
authorization".  What an authorization costs is CPU on two threads: the reactor's (facts,
building and answering) and the journal writer's (SQL, the card-data guard, rows); the commit's
fsync is a wait, not work, and is the same with or without rules (the stage has no commit of its
own).  So the benchmark runs real authorizations through `PaymentService` (journal on a SQLite
file, the demo's rules, merchants and bank_a's dialect) against an issuer that approves at once
in-process, in groups, alternating a service with the stage and one without it, and reads
for each authorization the CPU clocks of the reactor thread and of the writer thread
(`time.pthread_getcpuclockid`).  It prints the medians with and without the stage, and the
stage's cost: the median of the differences between neighbouring groups, one with the stage and
one without (neighbours share the machine's state of the moment, so its drift, a third on these
shared machines, cancels out; a run with the stage on both sides reads within a few µs of zero).

    kswitch-bench-risk                     # 3000 authorizations each way, 32 at a time, then one at a time
    kswitch-bench-risk --payments 10000 --config config/kswitch.toml
    kswitch-bench-risk --concurrency 1     # one at a time only

With ``--concurrency N`` the benchmark sends N authorizations together (with the stage, or
without), so the writer commits them in one batch as it does under load, and divides the CPU of
each group by N.  Both operating points are printed by default: 32 at a time is where CPU per
authorization decides what the switch can carry; one at a time every payment is its own writer
batch with a cold cache, and everything, the stage included, costs about twice as much.

Cards, IPs and amounts rotate so the demo's velocity rules count without blocking (every payment
is approved, the common case).  Not a test; numbers depend on the machine and its load.

``--cpu N`` runs the whole process on CPU N.  The reactor and the writer share one GIL, so they
never run Python at the same time and one CPU does the same work; what it takes away is the
noise of where the two threads land (on two CPUs, a payment's data crosses between their caches,
and a figure swings between runs by half).  Both ways are real: pinned is the stage's own cost,
steady enough to compare two trees; unpinned adds what crossing CPUs costs the stage's data.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task

from switch.bank.connector import Connector
from switch.bank.numbering import RrnAllocator
from switch.domain.answering import Answerable
from switch.domain.cardcheck import luhn_valid
from switch.domain.currency import by_alpha
from switch.domain.customer import Customer
from switch.domain.model import AuthorizeRequest, CardInstrument
from switch.engine.bank import Bank
from switch.engine.engine import Engine
from switch.engine.payments import PaymentService
from switch.engine.risk import RiskStage
from switch.engine.saf import StoreAndForward
from switch.iso.dialect import Message
from switch.iso.mti import response_mti
from switch.journal import Journal, JournalConfig, open_journal
from switch.observe.logs import configure
from switch.ops.config import DEFAULT_CONFIG, load_config
from switch.tools.bench.journal import keys

BANK = "bank_a"


class InstantIssuer(Connector):
    """bank_a's connector with no link: every request is approved at once, so only the switch works."""

    @property
    def ready(self) -> bool:
        return True

    def request_to(self, answer_to: Answerable[Message], message: Message, timeout: float | None = None, *,
                   encoded: bytes | None = None) -> None:
        self.release_stan(message["11"])
        answer = {k: v for k, v in message.items() if k in ("3", "4", "7", "11", "37", "41", "42", "49")}
        answer_to.callback({**answer, "t": response_mti(message["t"]), "38": "A1B2C3", "39": "00"})


def cards(count: int) -> list[str]:
    found, n = [], 0
    while len(found) < count:
        pan = f"42{n:013d}"  # clear of the demo cards (4000000000000259 is blocklisted)
        pan += next(d for d in "0123456789" if luhn_valid(pan + d))
        found.append(pan)
        n += 1
    return found


def requests(count: int, merchant: str, store: str, first_card: int = 0) -> list[AuthorizeRequest]:
    """``count`` authorizations over 1,000 cards from the ``first_card``-th (each round its own, so no card
    reaches the demo's velocity limit of 10 a minute), 300 customers, 500 IPs and 400 devices."""
    usd = by_alpha("USD")
    assert usd is not None
    pans = cards(first_card + 1000)[first_card:]
    return [AuthorizeRequest(merchant, store, f"o-{first_card}-{i}", 1000 + i % 500, usd, True,
                             CardInstrument(pans[i % len(pans)], "3012"), bank=BANK,
                             customer=Customer(id=f"c-{i % 300}", ip=f"203.0.{i % 2}.{i % 250}",
                                               device_id=f"d-{i % 400}"))
            for i in range(count)]


async def alternate(services: dict[bool, PaymentService], reqs: list[AuthorizeRequest], group: int,
                    writer: int) -> dict[str, dict[str, float]]:
    """Groups of ``group`` authorizations, with the stage, without, without, with, ...: the medians of each
    side's CPU per authorization, and (``added``) the median of each neighbouring pair's difference."""
    samples: dict[bool, dict[str, list[float]]] = {w: {"reactor": [], "writer": [], "both": []} for w in services}
    paired: dict[str, list[float]] = {"reactor": [], "writer": [], "both": []}
    for i in range(0, len(reqs), group):
        batch = reqs[i:i + group]
        with_stage = (i // group % 2 == 0) == (i // group // 2 % 2 == 0)
        r0, w0 = time.thread_time_ns(), time.clock_gettime_ns(writer)
        results = await defer.gatherResults([defer.ensureDeferred(services[with_stage].authorize(req, "bench"))
                                             for req in batch])
        r1, w1 = time.thread_time_ns(), time.clock_gettime_ns(writer)
        for j, result in enumerate(results):
            if result["status"] != "approved":
                raise SystemExit(f"bench: payment {i + j} was {result['status']} ({result.get('reason')}), "
                                 "not approved")
        for name, ns in (("reactor", r1 - r0), ("writer", w1 - w0), ("both", r1 - r0 + w1 - w0)):
            samples[with_stage][name].append(ns / 1000 / len(batch))
            if i // group % 2 == 1:  # the second group of a pair: one of the two had the stage
                sign = 1 if with_stage else -1
                paired[name].append(sign * (samples[with_stage][name][-1] - samples[not with_stage][name][-1]))
    medians = {("with" if w else "without"): {k: statistics.median(v) for k, v in s.items()}
               for w, s in samples.items()}
    medians["added"] = {k: statistics.median(v) for k, v in paired.items()}
    return medians


def at_a_time(group: int) -> str:
    return "one at a time" if group == 1 else f"{group} at a time"


def writer_clock() -> int:
    """The CPU clock of the journal's writer thread."""
    [writer] = [t for t in threading.enumerate() if t.name.startswith("kswitch-journal-writer")]
    assert writer.ident is not None
    return time.pthread_getcpuclockid(writer.ident)


async def instant_services(reactor: Any, journal: Journal, cfg: Any,
                           registry: CollectorRegistry) -> tuple[dict[bool, PaymentService], RiskStage]:
    """A `PaymentService` on bank_a's `InstantIssuer` with ``cfg``'s risk stage (True) and one without it
    (False), sharing ``journal`` and the bank."""
    settings = cfg.banks[BANK]
    rrns = RrnAllocator(reactor.seconds, lambda *a: journal.reserve_numbers(f"rrn:{BANK}", *a), node=cfg.node)
    await rrns.start()
    plain = tuple(replace(link, tls=None) for link in settings.options.links)  # never connected
    issuer = InstantIssuer(replace(settings.options, links=plain), reactor=reactor, registry=registry)
    banks = {BANK: Bank(issuer, settings.profile, settings.saf, rrns)}
    saf = StoreAndForward(reactor, journal, banks, registry)
    engine = Engine(reactor, journal, banks, saf)
    stage = RiskStage(reactor, journal, cfg.risk, registry)
    return {with_stage: PaymentService(reactor, journal, banks, cfg.router, cfg.api.merchants, saf, registry,
                                       engine=engine, risk=stage if with_stage else None)
            for with_stage in (True, False)}, stage


async def run(reactor: Any, args: argparse.Namespace) -> dict[int, dict[str, dict[str, float]]]:
    cfg = load_config(args.config)
    directory = Path(tempfile.mkdtemp(prefix="kswitch-bench-risk-"))
    ring, secret = keys(directory)
    config = JournalConfig(backend="sqlite", sqlite_path=directory / "journal.sqlite3", pan_keys=ring,
                           pan_hash_secret=secret)
    registry = CollectorRegistry()
    journal = await open_journal(config, reactor, registry=registry, clock=reactor.seconds)
    try:
        services, stage = await instant_services(reactor, journal, cfg, registry)
        merchant = cfg.api.merchants["M100"]
        writer = writer_clock()
        found = {}
        for round_, group in enumerate(args.concurrency):
            reqs = requests(args.payments * 2, merchant.id, next(iter(merchant.stores)), first_card=round_ * 1000)
            found[group] = medians = await alternate(services, reqs, group, writer)
            print(f"risk stage, {len(stage.rules.rules)} rules from {args.config}; {args.payments} approved "
                  f"authorizations with it and as many without, alternating, {at_a_time(group)}; median CPU per "
                  "authorization, µs:", file=sys.stdout)
            print(f"  {'':8} {'reactor':>9} {'writer':>9} {'both':>9}", file=sys.stdout)
            for row in ("without", "with", "added"):
                m = medians[row]
                print(f"  {row:8} {m['reactor']:9.1f} {m['writer']:9.1f} {m['both']:9.1f}", file=sys.stdout)
        for group, medians in found.items():
            print(f"risk stage adds {medians['added']['both']:.1f} µs median CPU per authorization, {at_a_time(group)} "
                  "(reactor + journal writer threads, demo rules; the median of the differences between "
                  "neighbouring groups with and without the stage)", file=sys.stdout)
        return found
    finally:
        await journal.close()


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kswitch-bench-risk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=3000, help="authorizations with the stage (and without)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 1],
                        help="authorizations sent together, one round per value: 32 as a loaded switch has them "
                             "(the writer commits them in one batch), 1 one at a time (default: both)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="whose [risk] rules to measure")
    parser.add_argument("--cpu", type=int, help="run on this CPU only (see the module docstring)")
    args = parser.parse_args(argv)
    allowed = sorted(os.sched_getaffinity(0))
    if args.cpu is not None and args.cpu not in allowed:
        parser.error(f"--cpu {args.cpu}: this process may run on CPUs {', '.join(map(str, allowed))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # before the journal's threads start: they inherit it
    configure("json", level="warning")
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
