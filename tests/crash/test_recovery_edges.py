"""Journal states a SIGKILL can leave behind that the random crash test hits only rarely,
built directly so that recovery of each one is checked every run.

The payment service journals a new transaction and its outgoing request as two writes
(`PaymentService._journal_request`: ``create_transaction`` then ``append_message``) and
sends nothing to the bank until both are durable.  The group-commit writer puts writes
into whatever batch is open when it takes from its queue, so the two can land in two
commits (always with ``[journal] max_batch = 1``); a SIGKILL between them leaves a
``pending`` transaction without its request.  The bank never saw it, so no money moved;
the restarted switch must still start and settle it.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor

from switch.app import ensure_dev_keys
from switch.journal.journal import open_journal
from switch.journal.models import CardData, Kind, NewTransaction, Status
from switch.ops.config import load_config
from tests.crash.harness import (
    BANKS,
    CARDS,
    EXPIRY,
    MERCHANT,
    OPENING_BALANCE,
    STORE,
    Banks,
    SwitchProcess,
    accounts_toml,
    config_toml,
    postings,
    remove_dir,
    short_run_dir,
)

pytestmark = pytest.mark.crash

@pytest_twisted.ensureDeferred
async def test_restart_after_kill_between_transaction_and_request_commits(tmp_path):
    run_dir = short_run_dir()
    state = tmp_path / "state"
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(accounts_toml())
    banks = await Banks.start(accounts, state / "pki")
    cfg_file = tmp_path / "kswitch.toml"
    cfg_file.write_text(config_toml(state, run_dir, banks.ports, 1.0))
    config = load_config(cfg_file)
    switch = SwitchProcess(cfg_file, tmp_path, run_dir / "admin.sock")
    card = CARDS[0]
    try:
        # What the first of the two writes leaves when the process dies before the second.
        ensure_dev_keys(config.state_dir / "keys")
        journal = await open_journal(config.journal, reactor, registry=CollectorRegistry())
        txn = await journal.create_transaction(NewTransaction(
            kind=Kind.SALE, merchant_id=MERCHANT, store_id=STORE, order_id="half-written-1", connector=card.bank,
            amount=1250, currency="USD", card=CardData(card.pan, EXPIRY), retain_card=True, stan="000001",
            transmission_datetime=time.strftime("%m%d%H%M%S", time.gmtime()),
        ))
        assert txn.status is Status.PENDING and await journal.messages(txn.txn_id) == []
        await journal.close()

        switch.start()
        await switch.wait_ready(20.0)  # before the fix: "kswitch: cannot start: coroutine raised StopIteration"
        assert await switch.terminate(20.0) == 0

        journal = await open_journal(config.journal, reactor, registry=CollectorRegistry())
        try:
            settled = await journal.get_transaction(txn.txn_id)
            assert settled.status in (Status.FAILED, Status.REVERSED), settled.status
            assert await journal.in_flight() == []
        finally:
            await journal.close()
        for name in BANKS:
            assert postings(banks.sims[name]) == []
            assert banks.sims[name].balance(card.pan) == OPENING_BALANCE
    finally:
        switch.abort()
        await banks.close()
        remove_dir(run_dir)


BACKLOG = 8


class SlowDrain(AssertionError):
    """Recovered reversals still queued seconds after the restarted switch was ready."""


@pytest_twisted.ensureDeferred
async def test_reversals_recovered_after_a_kill_drain_promptly(tmp_path):
    """Kill the switch while several sales are at the bank unanswered: recovery queues one
    reversal each, and once the bank answers again they must all be through within seconds
    (each takes a round trip on loopback; retry_interval is 0.2 s)."""
    from concurrent.futures import ThreadPoolExecutor

    from switch.gateway.client import BlockingClient, KSwitchError
    from tests.crash.harness import CLIENT, CVV, TOKEN, sleep

    run_dir = short_run_dir()
    state = tmp_path / "state"
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(accounts_toml())
    banks = await Banks.start(accounts, state / "pki")
    cfg_file = tmp_path / "kswitch.toml"
    cfg_file.write_text(config_toml(state, run_dir, banks.ports, 3.0))
    switch = SwitchProcess(cfg_file, tmp_path, run_dir / "admin.sock")
    card = CARDS[0]
    sim = banks.sims[card.bank]
    pool = ThreadPoolExecutor(BACKLOG)

    def pay(n: int) -> None:
        with BlockingClient(unix_path=str(run_dir / "api.sock"), client=CLIENT, token=TOKEN, timeout=10) as c:
            try:
                c.authorize(merchant_id=MERCHANT, store_id=STORE, order_id=f"backlog-{n}", amount=100 + n,
                            currency="USD", pan=card.pan, expiry=EXPIRY, cvv=CVV, idempotency_key=f"backlog-{n}")
            except KSwitchError:
                pass  # the switch is killed while this waits: that is the point

    try:
        switch.start()
        await switch.wait_ready(20.0)
        sim.set_faults(delay=10.0)  # the bank debits at once and answers (far) later
        for n in range(BACKLOG):
            pool.submit(pay, n)
        deadline = time.monotonic() + 2.5
        while len(postings(sim)) < BACKLOG:
            assert time.monotonic() < deadline, f"only {len(postings(sim))} of {BACKLOG} sales reached the bank"
            await sleep(0.01)
        switch.kill()  # every sale debited, none answered, all pending in the journal
        sim.set_faults(delay=0.0)
        assert sim.balance(card.pan) == OPENING_BALANCE - sum(100 + n for n in range(BACKLOG))
        switch.start()
        await switch.wait_ready(20.0)
        ready = time.monotonic()
        while not all(p.reversed for p in postings(sim)):
            waited = time.monotonic() - ready
            if waited > 3.0:
                raise SlowDrain(f"{sum(p.reversed for p in postings(sim))} of {BACKLOG} recovered reversals done "
                                f"{waited:.1f}s after the restarted switch was ready")
            await sleep(0.05)
        assert sim.balance(card.pan) == OPENING_BALANCE
        assert await switch.terminate(20.0) == 0
    finally:
        switch.abort()
        pool.shutdown(wait=True)
        await banks.close()
        remove_dir(run_dir)
