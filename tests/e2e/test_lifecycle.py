"""Capture, void, refund and idempotency, end to end, with banksim's ledger as the witness."""

from __future__ import annotations

import pytest_twisted

from tests.e2e.harness import authorize

VISA = "4111111111111111"
OTHER_TOKEN = "e2e-token-0123456789-other"


@pytest_twisted.ensureDeferred
async def test_preauth_then_partial_capture(env):
    bank = env.sims["bank_a"]
    before = bank.balance(VISA)
    c = await env.connect()
    a = await c.call(authorize(1, amount=5000, capture=False))
    assert a["status"] == "approved" and bank.available(VISA) == before - 5000 and bank.balance(VISA) == before
    too_much = await c.call({"id": 2, "op": "capture", "txn_id": a["txn_id"], "amount": 5001})
    assert (too_much["ok"], too_much["error"]["code"], too_much["error"]["field"]) == (False, "invalid_request", "amount")
    cap = await c.call({"id": 3, "op": "capture", "txn_id": a["txn_id"], "amount": 4000})
    assert cap["ok"] and cap["status"] == "captured" and cap["amount_captured"] == 4000
    assert cap["operation"]["kind"] == "capture" and cap["operation"]["status"] == "approved"
    assert bank.balance(VISA) == before - 4000 and bank.available(VISA) == before - 4000
    again = await c.call({"id": 4, "op": "capture", "txn_id": a["txn_id"]})
    assert again["error"]["code"] == "invalid_state"
    void = await c.call({"id": 5, "op": "void", "txn_id": a["txn_id"]})
    assert void["error"]["code"] == "invalid_state" and "refund instead" in void["error"]["message"]
    mtis = [m.mti for m in await env.journal.messages(cap["operation"]["txn_id"])]
    assert mtis == ["0220", "0230"]


@pytest_twisted.ensureDeferred
async def test_an_operation_is_two_journal_writes_its_answer_committed_with_its_outcome(env):
    """A capture (or refund) commits with its reservation and request, and the bank's answer with the operation's
    outcome and the parent's totals: two writer units, as a payment (three when the answer was a unit of its
    own). The lease heartbeat, every 5 s, may add one write meanwhile."""
    committed = {"backend": "sqlite", "outcome": "committed"}
    c = await env.connect()
    preauths = [await c.call(authorize(n, amount=2000, capture=False)) for n in range(1, 6)]
    before = env.registry.get_sample_value("kswitch_journal_writes_total", committed)
    captures = [await c.call({"id": 10 + n, "op": "capture", "txn_id": a["txn_id"]}) for n, a in enumerate(preauths)]
    assert {cap["operation"]["status"] for cap in captures} == {"approved"}
    writes = env.registry.get_sample_value("kswitch_journal_writes_total", committed) - before
    assert writes in (10, 11), f"5 captures took {writes} journal writes"
    operation = captures[0]["operation"]["txn_id"]
    assert [(m.mti, m.direction.value) for m in await env.journal.messages(operation)] == [
        ("0220", "out"), ("0230", "in")]


@pytest_twisted.ensureDeferred
async def test_sale_partial_then_full_refund_never_more_than_captured(env):
    bank = env.sims["bank_a"]
    before = bank.balance(VISA)
    c = await env.connect()
    a = await c.call(authorize(1, amount=3000))
    r1 = await c.call({"id": 2, "op": "refund", "txn_id": a["txn_id"], "amount": 1000})
    assert (r1["status"], r1["amount_refunded"]) == ("partially_refunded", 1000)
    over = await c.call({"id": 3, "op": "refund", "txn_id": a["txn_id"], "amount": 2001})
    assert over["error"]["code"] == "invalid_request" and over["error"]["field"] == "amount"
    r2 = await c.call({"id": 4, "op": "refund", "txn_id": a["txn_id"]})
    assert (r2["status"], r2["amount_refunded"], r2["operation"]["amount"]) == ("refunded", 3000, 2000)
    assert bank.balance(VISA) == before
    done = await c.call({"id": 5, "op": "refund", "txn_id": a["txn_id"], "amount": 1})
    assert done["error"]["code"] == "invalid_state"


@pytest_twisted.ensureDeferred
async def test_void_of_a_sale_goes_through_saf_and_restores_balance(env):
    bank = env.sims["bank_a"]
    before = bank.balance(VISA)
    c = await env.connect()
    a = await c.call(authorize(1))
    v = await c.call({"id": 2, "op": "void", "txn_id": a["txn_id"]})
    assert v["ok"] and v["status"] == "reversed", v
    assert bank.balance(VISA) == before
    again = await c.call({"id": 3, "op": "void", "txn_id": a["txn_id"]})
    assert again["error"]["code"] == "invalid_state"
    refund = await c.call({"id": 4, "op": "refund", "txn_id": a["txn_id"]})
    assert refund["error"]["code"] == "invalid_state"


@pytest_twisted.ensureDeferred
async def test_operations_on_another_merchants_transaction_are_not_found(env):
    c = await env.connect()
    a = await c.call(authorize(1))
    other = await env.connect(client="other", token=OTHER_TOKEN)
    for i, op in enumerate(("capture", "void", "refund")):
        x = await other.call({"id": i, "op": op, "txn_id": a["txn_id"]})
        assert (x["ok"], x["error"]["code"]) == (False, "not_found")


@pytest_twisted.ensureDeferred
async def test_idempotency_sequential_concurrent_and_conflicting(env):
    bank = env.sims["bank_a"]
    c = await env.connect()
    first = await c.call(authorize(1, idempotency_key="k-1"))
    second = await c.call(authorize(2, order_id="order-1", idempotency_key="k-1"))
    assert second["txn_id"] == first["txn_id"] and second["status"] == "approved" and second["id"] == 2
    assert bank.received["0200"] == 1
    bank.set_faults(delay=0.3)
    c2 = await env.connect()
    c.send(authorize(3, idempotency_key="k-2"))
    c2.send(authorize(3, idempotency_key="k-2"))
    x, y = await c.answers.get(), await c2.answers.get()
    assert x["txn_id"] == y["txn_id"] and x["status"] == y["status"] == "approved"
    assert bank.received["0200"] == 2
    conflict = await c.call(authorize(4, order_id="order-1", amount=999, idempotency_key="k-1"))
    assert (conflict["ok"], conflict["error"]["code"], conflict["error"]["field"]) == (
        False, "idempotency_conflict", "idempotency_key")
