"""One chaos run, shared by the suite's chaos test and ``bin/soak``.

The real ``kswitch`` process (``bin/kswitch run``, API and admin on Unix sockets) against two
in-process banksims over mutual TLS; a lifecycle web tier (`tests.chaos.webtier`) of
several connections; and, for the length of the load, at seeded random moments:

* each bank switching between calm, answers later than the switch's timeout, answers
  just inside it, and dropped answers (the bank moved the money, the answer is lost);
* each bank host going down and coming back on the same port with the same ledger;
* the switch SIGKILLed and restarted at once;
* the journal's writer process SIGKILLed alone (the switch starts another);
* on a PostgreSQL journal, the server ending the switch's connections (`tests.chaos.pgfaults`): the
  writer's alone (its batch in flight is lost or its COMMIT's outcome unknown), or the readers' too.

Then the load stops (every request has its answer), faults go off, store-and-forward
drains, every order's ``status`` is read, the switch stops with SIGTERM, and
`tests.chaos.invariants.check` compares web tier, status, journal and bank ledgers.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, gatherResults
from twisted.internet.threads import deferToThread

from switch.gateway.client import BlockingClient, KSwitchConnectionError, KSwitchError
from switch.journal.journal import open_journal
from switch.ops.config import load_config
from tests.chaos.invariants import check
from tests.chaos.pgfaults import terminate_backends
from tests.chaos.webtier import CLIENT_TIMEOUT, LifecycleWebTier, Order
from tests.crash.harness import (
    BANKS,
    CLIENT,
    MERCHANT,
    TOKEN,
    Banks,
    SwitchProcess,
    accounts_toml,
    config_toml,
    journal_toml,
    remove_dir,
    short_run_dir,
    sleep,
    wait_saf_drained,
)
from tests.crash.invariants import Report

PG_DSN = os.environ.get("KSWITCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
READY_TIMEOUT = 30.0
SAF_RETRY_INTERVAL, SAF_MAX_ATTEMPTS = 0.2, 200  # the harness's connector settings: 40 s to a dead letter
SAF_BUDGET = SAF_RETRY_INTERVAL * SAF_MAX_ATTEMPTS


def fault_phases(request_timeout: float) -> tuple[tuple[str, dict[str, Any], int], ...]:
    """(name, banksim faults, weight): what a bank does for the next 0.5-1.5 s."""
    return (
        ("calm", dict(delay=0.0, drop_ratio=0.0), 4),
        ("late", dict(delay=request_timeout + 0.3, drop_ratio=0.0), 1),  # every answer after the timeout
        ("near_timeout", dict(delay=request_timeout - 0.08, drop_ratio=0.0), 1),  # in time, or just not
        ("drops", dict(delay=0.0, drop_ratio=0.15), 2),  # processed at the bank, answer lost
    )


@dataclass
class ChaosOptions:
    seed: int
    seconds: float = 45.0
    workers: int = 4
    kills: int = 4
    bank_restarts: int = 2  # per bank
    journal: str = "sqlite"  # or "postgresql"
    writer: str = "process"  # [journal] writer: "process" (each writer kill then lands on a working writer) or "auto"
    writer_kills: int = 3  # SIGKILLs of the journal's writer process alone
    pg_terminations: int = 4  # PostgreSQL journal only: times the server ends the switch's connections
    request_timeout: float = 1.0
    drain_cap: float = 60.0


@dataclass
class ChaosResult:
    options: ChaosOptions
    report: Report
    summary: dict[str, Any] = field(default_factory=dict)
    workdir: Path | None = None

    def failure(self) -> str:
        o = self.options
        return (
            f"money invariants violated (seed {o.seed}: rerun with KSWITCH_CHAOS_SEED={o.seed}, journal {o.journal}, "
            f"{self.summary.get('kills')} kills, logs and journal in {self.workdir}):\n{self.report.render()}\n"
            f"summary: {json.dumps(self.summary)}"
        )


class _Run:
    """The moving parts of one run and what was done to them."""

    def __init__(self, options: ChaosOptions, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.rng = random.Random(options.seed)
        self.run_dir = short_run_dir()
        self.stopping = False
        self.faults: Counter[str] = Counter()
        self.pg_backends_ended = 0
        self.restarts: list[float] = []
        self.bank_restarts: Counter[str] = Counter()
        self.longest_bank_outage: dict[str, float] = {}
        self.pg_schema = f"kswitch_chaos_{uuid.uuid4().hex[:12]}" if options.journal == "postgresql" else None

    async def faults_schedule(self, banks: Banks) -> None:
        phases = fault_phases(self.options.request_timeout)
        while not self.stopping:
            for bank in BANKS:
                name, faults, _ = self.rng.choices(phases, weights=[w for *_, w in phases])[0]
                banks.set_faults(bank, **faults)
                self.faults[name] += 1
            await sleep(self.rng.uniform(0.5, 1.5))
        for bank in BANKS:
            banks.set_faults(bank, delay=0.0, drop_ratio=0.0)

    async def kill_schedule(self, switch: SwitchProcess, web: LifecycleWebTier, at: list[float], began: float) -> None:
        for moment in at:
            await sleep(max(0.0, began + moment - time.monotonic()))
            if self.stopping:
                return
            switch.kill()
            await sleep(self.rng.uniform(0.0, 0.3))  # the web tier finds the switch gone
            switch.start()
            if self.rng.random() < 0.5:
                await self.kill_writer_while_starting(switch)
            self.restarts.append(await switch.wait_ready(READY_TIMEOUT))
            assert not web.crashes, f"web tier worker crashed: {web.crashes}"

    async def kill_writer_while_starting(self, switch: SwitchProcess) -> None:
        """The restarted switch's writer process dies while the switch starts: soon after it appears (mostly before
        it reports itself started), or as soon as the switch has taken its lease, with the start-up's next writes
        (business days, RRN blocks, recovery), which are made again (`switch.journal.again`) instead of ending
        the start."""
        deadline = time.monotonic() + READY_TIMEOUT
        if self.rng.random() < 0.5:
            while not switch.writer_pid() and time.monotonic() < deadline:
                await sleep(0.01)
            await sleep(self.rng.uniform(0.0, 0.6))
        else:
            while '"journal_lease_taken"' not in switch.log_text() and time.monotonic() < deadline:
                await sleep(0.005)
        if switch.kill_writer():
            self.faults["writer killed while starting"] += 1

    async def writer_kill_schedule(self, switch: SwitchProcess, at: list[float], began: float) -> None:
        """The journal's writer process dies on its own (the OOM killer, say): its batch's payments hear
        `CommitOutcomeUnknown`, the switch starts another."""
        for moment in at:
            await sleep(max(0.0, began + moment - time.monotonic()))
            if self.stopping:
                return
            switch.kill_writer()

    async def pg_schedule(self, switch: SwitchProcess, at: list[float], began: float) -> None:
        """PostgreSQL ends the switch's journal connections: the writer's alone, or the readers' with them."""
        for moment in at:
            await sleep(max(0.0, began + moment - time.monotonic()))
            if self.stopping:
                return
            pids = [pid for pid in (switch.pid(), switch.writer_pid()) if pid is not None]
            writer_only = self.rng.random() < 0.6
            ended = await deferToThread(terminate_backends, PG_DSN, pids, writer_only)
            self.pg_backends_ended += ended
            if ended:
                self.faults["pg writer connection ended" if writer_only else "pg connections ended"] += 1

    async def bank_schedule(self, banks: Banks, bank: str, at: list[float], began: float) -> None:
        for moment in at:
            await sleep(max(0.0, began + moment - time.monotonic()))
            if self.stopping:
                return
            outage = self.rng.uniform(0.3, 2.5)
            await banks.stop(bank)
            await sleep(outage)
            await banks.resume(bank)
            self.bank_restarts[bank] += 1
            self.longest_bank_outage[bank] = max(outage, self.longest_bank_outage.get(bank, 0.0))

    def moments(self, count: int) -> list[float]:
        """``count`` seeded moments inside the load, none in its first or last two seconds."""
        span = max(self.options.seconds - 4.0, 1.0)
        return sorted(2.0 + self.rng.uniform(0, span) for _ in range(count))


async def run(options: ChaosOptions, workdir: Path) -> ChaosResult:
    began = time.monotonic()
    r = _Run(options, workdir)
    state = workdir / "state"
    accounts = workdir / "accounts.toml"
    accounts.write_text(accounts_toml())
    banks = await Banks.start(accounts, state / "pki", ledger_dir=workdir)
    for i, bank in enumerate(BANKS):
        banks.set_faults(bank, seed=options.seed + i)
    journal_table = journal_toml(options.journal, PG_DSN, r.pg_schema, writer=options.writer)
    cfg_file = workdir / "kswitch.toml"
    cfg_file.write_text(config_toml(state, r.run_dir, banks.ports, options.request_timeout, journal_table))
    switch = SwitchProcess(cfg_file, workdir, r.run_dir / "admin.sock")
    web = LifecycleWebTier(r.run_dir / "api.sock", options.seed, options.workers)
    report = Report()
    timings: dict[str, float] = {}
    journal = None
    schedules: list[Deferred[None]] = []
    try:
        switch.start()
        await switch.wait_ready(READY_TIMEOUT)
        web.start()
        load_began = time.monotonic()
        schedules += [
            ensureDeferred(r.faults_schedule(banks)),
            ensureDeferred(r.kill_schedule(switch, web, r.moments(options.kills), load_began)),
            ensureDeferred(r.writer_kill_schedule(switch, r.moments(options.writer_kills), load_began)),
            *(ensureDeferred(r.bank_schedule(banks, bank, r.moments(options.bank_restarts), load_began))
              for bank in BANKS),
        ]
        if options.journal == "postgresql":
            schedules.append(ensureDeferred(r.pg_schedule(switch, r.moments(options.pg_terminations), load_began)))
        await sleep(options.seconds)
        r.stopping = True
        await gatherResults(schedules, consumeErrors=True)
        timings["load"] = time.monotonic() - began

        web.stop_new()
        if not await _workers_done(web, timeout=60.0):
            waiting = [o.describe() for o in web.snapshot() if o.attempts and o.attempts[-1].answer is None
                       and o.attempts[-1].error is None]
            report.fail("W0 answers", f"{len(waiting)} request(s) still unanswered 60 s after the load stopped: "
                                      f"{waiting[:5]}")
            web.abort()
        assert not web.crashes, f"web tier worker crashed: {web.crashes}"
        timings["answered"] = time.monotonic() - began
        try:
            backlog, _ = await wait_saf_drained(switch, cap=options.drain_cap, dead_ok=True)
        except AssertionError as e:
            backlog = -1.0
            report.fail("P nothing pending", str(e).splitlines()[0])
        timings["drained"] = time.monotonic() - began
        orders = web.snapshot()
        await _read_status(r.run_dir / "api.sock", orders)
        timings["status_read"] = time.monotonic() - began
        code = await switch.terminate(timeout=20.0)
        if code != 0:
            report.fail("X switch", f"kswitch exited with {code} on SIGTERM\n{switch.log_tail()}")

        config = load_config(cfg_file)
        journal = await open_journal(config.journal, reactor, registry=CollectorRegistry())
        excused = {bank for bank, outage in r.longest_bank_outage.items() if outage >= SAF_BUDGET}
        checked = await check(journal, banks, orders, switch.logs, excused)
        for invariant, messages in checked.violations.items():
            report.violations[invariant] += messages
        timings["checked"] = time.monotonic() - began
        summary = {
            "seed": options.seed, "journal": options.journal, "seconds": options.seconds, "workers": options.workers,
            "kills": switch.kills, "writer": options.writer, "writer_kills": switch.writer_kills,
            "restart_seconds": [round(s, 2) for s in r.restarts],
            "bank_restarts": dict(r.bank_restarts), "faults_injected": dict(r.faults),
            "pg_backends_ended": r.pg_backends_ended,
            "writes_made_again": sum(path.read_text(errors="replace").count('"journal_write_made_again"')
                                     for path in switch.logs if path.exists()),
            "saf_backlog_after_load": backlog, **checked.summary,
            "violations": {k: len(v) for k, v in sorted(report.violations.items())},
            "timings": {k: round(v, 1) for k, v in timings.items()},
        }
        return ChaosResult(options, report, summary, workdir)
    finally:
        r.stopping = True
        web.abort()
        await DeferredList(schedules, consumeErrors=True)  # no bank comes back after the clean-up below
        switch.abort()
        if journal is not None:
            await journal.close()
        await banks.close()
        remove_dir(r.run_dir)
        if r.pg_schema is not None:
            await deferToThread(_drop_schema, r.pg_schema)


async def _workers_done(web: LifecycleWebTier, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while web.alive():
        if time.monotonic() > deadline:
            return False
        await sleep(0.05)
    return True


async def _read_status(api_sock: Path, orders: list[Order], connections: int = 4) -> None:
    """``status`` of every order's payment (by txn_id, or by order id when the web tier never learnt it)."""
    def read(share: list[Order]) -> None:
        client = BlockingClient(unix_path=str(api_sock), client=CLIENT, token=TOKEN, timeout=CLIENT_TIMEOUT)
        try:
            for order in share:
                query = {"txn_id": order.txn_id} if order.txn_id else {"merchant_id": MERCHANT,
                                                                        "order_id": order.order_id}
                for _ in range(3):
                    try:
                        order.final = client.call("status", **query)
                        break
                    except KSwitchConnectionError:
                        time.sleep(0.1)
                    except KSwitchError:
                        break
        finally:
            client.close()

    await gatherResults([deferToThread(read, orders[i::connections]) for i in range(connections)])


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
