"""SIGKILL of the real kswitch process while a capture, a refund and a void are at the bank unanswered.

After the restart, recovery resolves each operation by its message class: the capture
(a completion advice) is repeated with its original STAN until acknowledged, never
reversed, so the pre-authorization ends captured exactly once; the refund (a request
that may have moved money) is reversed; a void (its reversal already in store-and-forward)
resumes and ends with the payment voided.  Each operation's outcome is journalled with its
parent's totals in one commit, so the journal never shows an operation approved with its
parent unchanged, and the bank's ledger agrees.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from switch.gateway.client import BlockingClient, KSwitchError
from switch.journal.journal import open_journal
from switch.journal.models import Kind, Status
from switch.ops.config import load_config
from switch.tools.banksim import ORIGINAL_KINDS
from tests.crash.harness import (
    CARDS,
    CLIENT,
    CVV,
    EXPIRY,
    MERCHANT,
    OPENING_BALANCE,
    STORE,
    TOKEN,
    Banks,
    SwitchProcess,
    accounts_toml,
    config_toml,
    remove_dir,
    short_run_dir,
    sleep,
)

pytestmark = pytest.mark.crash

CAPTURE_CARD, REFUND_CARD, VOID_CARD = CARDS[0], CARDS[1], CARDS[2]  # bank_a, bank_a, bank_b


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_operations_in_flight_at_a_kill_are_repeated_or_reversed_by_class(tmp_path):
    run_dir = short_run_dir()
    state = tmp_path / "state"
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(accounts_toml())
    banks = await Banks.start(accounts, state / "pki")
    cfg_file = tmp_path / "kswitch.toml"
    cfg_file.write_text(config_toml(state, run_dir, banks.ports, 3.0))
    switch = SwitchProcess(cfg_file, tmp_path, run_dir / "admin.sock")
    sim, void_sim = banks.sims[CAPTURE_CARD.bank], banks.sims[VOID_CARD.bank]
    pool = ThreadPoolExecutor(3)

    def client() -> BlockingClient:
        return BlockingClient(unix_path=str(run_dir / "api.sock"), client=CLIENT, token=TOKEN, timeout=10)

    def pay(order: str, card, capture: bool) -> dict:
        with client() as c:
            return c.authorize(merchant_id=MERCHANT, store_id=STORE, order_id=order, amount=5000, currency="USD",
                               pan=card.pan, expiry=EXPIRY, cvv=CVV, capture=capture, idempotency_key=order)

    def operate(op: str, txn_id: str, amount: int | None = None) -> None:
        with client() as c:
            try:
                c.call(op, txn_id=txn_id, **({} if amount is None else {"amount": amount}))
            except KSwitchError:
                pass  # the switch is killed while this waits: that is the point

    try:
        switch.start()
        await switch.wait_ready(20.0)
        # The banks run on this reactor: every blocking client call goes to a thread.
        pre = await deferToThread(pay, "crash-pre-1", CAPTURE_CARD, False)
        sale = await deferToThread(pay, "crash-sale-1", REFUND_CARD, True)
        held = await deferToThread(pay, "crash-pre-2", VOID_CARD, False)
        assert pre["status"] == sale["status"] == held["status"] == "approved"
        for bank in (sim, void_sim):
            bank.set_faults(delay=10.0)  # the bank books at once and answers (far) later
        pool.submit(operate, "capture", pre["txn_id"], 4000)
        pool.submit(operate, "refund", sale["txn_id"], 1500)
        pool.submit(operate, "void", held["txn_id"])
        deadline = time.monotonic() + 5.0
        while sim.received["0220"] < 1 or sim.received["0200"] < 2 or void_sim.received["1420"] < 1:
            assert time.monotonic() < deadline, f"operations did not reach the banks: {dict(sim.received)}"
            await sleep(0.01)
        switch.kill()  # capture, refund and void booked by the banks, none answered nor journalled as final
        for bank in (sim, void_sim):
            bank.set_faults(delay=0.0)
        switch.start()
        await switch.wait_ready(20.0)

        def settled() -> bool:
            with client() as c:
                return (c.status(pre["txn_id"])["status"] == "captured"
                        and c.status(sale["txn_id"])["operations"][0]["status"] == "reversed"
                        and c.status(held["txn_id"])["status"] == "reversed")

        deadline = time.monotonic() + 15.0
        while not await deferToThread(settled):
            assert time.monotonic() < deadline, "the recovered operations were not resolved"
            await sleep(0.1)
        assert sim.received["0221"] >= 1  # the capture was repeated ...
        capture_debits = [p for p in sim.ledger.postings(ORIGINAL_KINDS, number=CAPTURE_CARD.pan) if p.effect == "debit"]
        assert [(p.amount, p.reversed) for p in capture_debits] == [(4000, False)]  # ... and booked once
        assert sim.balance(CAPTURE_CARD.pan) == sim.available(CAPTURE_CARD.pan) == OPENING_BALANCE - 4000
        credits = [p for p in sim.ledger.postings(ORIGINAL_KINDS, number=REFUND_CARD.pan) if p.effect == "credit"]
        assert [(p.amount, p.reversed) for p in credits] == [(1500, True)]  # the refund was reversed
        assert sim.balance(REFUND_CARD.pan) == OPENING_BALANCE - 5000
        assert void_sim.available(VOID_CARD.pan) == OPENING_BALANCE  # the voided hold is gone

        def refund_all() -> tuple[dict, dict, dict]:
            with client() as c:
                return (c.status(sale["txn_id"]), c.call("refund", txn_id=sale["txn_id"], amount=5000),
                        c.status(held["txn_id"]))

        after, full, voided = await deferToThread(refund_all)
        assert (after["status"], after["amount_refunded"]) == ("approved", 0)
        assert (full["status"], full["amount_refunded"]) == ("refunded", 5000)  # the released reservation is usable
        assert [(o["kind"], o["status"]) for o in voided["operations"]] == [("void", "approved")]
        assert await switch.terminate(20.0) == 0

        journal = await open_journal(load_config(cfg_file).journal, reactor, registry=CollectorRegistry())
        try:
            assert await journal.in_flight() == []
            assert (await journal.get_transaction(held["txn_id"])).status is Status.VOIDED
            for parent_id in (pre["txn_id"], sale["txn_id"], held["txn_id"]):
                parent = await journal.get_transaction(parent_id)
                children = await journal.children(parent_id)
                approved = [c for c in children if c.status is Status.APPROVED]
                assert parent.amount_captured == (5000 if parent.kind is Kind.SALE else
                                                  sum(c.amount for c in approved if c.kind is Kind.CAPTURE))
                assert parent.amount_refunded == sum(c.amount for c in approved if c.kind is Kind.REFUND)
                assert parent.amount_capture_pending == parent.amount_refund_pending == 0
        finally:
            await journal.close()
    finally:
        switch.abort()
        pool.shutdown(wait=True)
        await banks.close()
        remove_dir(run_dir)
