"""Uncertain outcomes are reversed through store-and-forward until the bank acknowledges."""

from __future__ import annotations

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from switch.journal.models import SafState
from tests.e2e.harness import authorize, eventually, http_get

VISA = "4111111111111111"


async def _status(env, txn_id):
    return (await env.journal.get_transaction(txn_id)).status.value


async def _events(env, kind):
    events = await env.journal.events_after(["M100"], 0)
    return [e for e in events if e.type == kind]


@pytest_twisted.ensureDeferred
async def test_timeout_is_answered_then_reversed_and_balance_restored(fast):
    bank = fast.sims["bank_a"]
    before = bank.balance(VISA)
    bank.set_faults(drop_ratio=1.0)  # the bank debits but its answer is lost
    c = await fast.connect()
    a = await c.call(authorize(1))
    assert (a["status"], a["reason"]) == ("timeout", "issuer_timeout")
    assert bank.balance(VISA) == before - 1250
    bank.set_faults(drop_ratio=0.0)
    await eventually(lambda: bank.balance(VISA) == before)
    await eventually(lambda: _status(fast, a["txn_id"]), timeout=5)
    await eventually(lambda: _status_is(fast, a["txn_id"], "reversed"))
    s = await c.call({"id": 2, "op": "status", "txn_id": a["txn_id"]})
    assert s["status"] == "reversed"
    assert len(await _events(fast, "payment.reversed")) == 1
    assert bank.received["0400"] >= 1


async def _status_is(env, txn_id, status):
    return await _status(env, txn_id) == status


@pytest_twisted.ensureDeferred
async def test_late_approval_after_timeout_is_still_reversed(fast):
    bank = fast.sims["bank_a"]
    before = bank.balance(VISA)
    bank.set_faults(delay=1.0)
    c = await fast.connect()
    a = await c.call(authorize(1))
    assert a["status"] == "timeout"
    await eventually(lambda: _events(fast, "payment.late_response"))
    late = (await _events(fast, "payment.late_response"))[0]
    assert late.payload["approved"] is True and late.txn_id == a["txn_id"]
    bank.set_faults(delay=0.0)
    await eventually(lambda: _status_is(fast, a["txn_id"], "reversed"))
    await eventually(lambda: bank.balance(VISA) == before)
    mtis = [m.mti for m in await fast.journal.messages(a["txn_id"])]
    assert mtis[:2] == ["0200", "0210"] or "0210" in mtis  # the late answer is journalled


@pytest_twisted.ensureDeferred
async def test_link_drop_after_write_is_reversed(fast):
    bank = fast.sims["bank_a"]
    before = bank.balance(VISA)
    bank.set_faults(disconnect_after=2)  # sign-on is message 1; the sale is message 2 and is lost with the link
    c = await fast.connect()
    a = await c.call(authorize(1))
    assert a["status"] == "timeout"
    bank.set_faults(disconnect_after=None)
    await eventually(lambda: _status_is(fast, a["txn_id"], "reversed"))
    assert bank.balance(VISA) == before


@pytest_twisted.ensureDeferred
async def test_bank_down_for_a_while_saf_repeats_then_drains(fast):
    bank = fast.sims["bank_a"]
    before = bank.balance(VISA)
    bank.set_faults(drop_ratio=1.0)
    c = await fast.connect()
    answers = [await c.call(authorize(i)) for i in (1, 2)]
    assert [x["status"] for x in answers] == ["timeout", "timeout"]
    await eventually(lambda: bank.received["0400"] >= 1)
    await bank.close()
    await eventually(lambda: not fast.switch.banks["bank_a"].ready)
    bank.set_faults(drop_ratio=0.0)
    await fast.restart_bank("bank_a")
    for x in answers:
        await eventually(lambda: _status_is(fast, x["txn_id"], "reversed"))
    assert bank.received["0401"] >= 1  # repeats after the first unanswered attempt
    assert bank.balance(VISA) == before
    depth = await fast.journal.saf_list(states=(SafState.QUEUED,))
    assert depth == []


@pytest_twisted.ensureDeferred
async def test_dead_letter_after_max_attempts_is_visible(fast):
    bank = fast.sims["bank_a"]
    bank.set_faults(drop_ratio=1.0)
    c = await fast.connect()
    a = await c.call(authorize(1))
    assert a["status"] == "timeout"
    await eventually(lambda: fast.journal.saf_list(states=(SafState.DEAD,)), timeout=15)
    dead = await fast.journal.saf_list(states=(SafState.DEAD,))
    assert [d.txn_id for d in dead] == [a["txn_id"]] and dead[0].attempts == 5
    assert len(await _events(fast, "saf.dead_letter")) == 1
    await fast.journal.refresh_saf_metrics()
    _, body = await http_get(fast.admin_port, "/metrics")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    assert samples[("kswitch_saf_dead_letters", (("connector", "bank_a"),))] == 1


@pytest_twisted.ensureDeferred
async def test_approval_the_shop_never_received_is_reversed(fast):
    bank = fast.sims["bank_a"]
    before = bank.balance(VISA)
    bank.set_faults(delay=0.2)
    c = await fast.connect()
    c.send(authorize(1, order_id="gone-1"))
    await eventually(lambda: fast.switch.banks["bank_a"].connector.mux.in_flight == 1)
    c.transport.abortConnection()
    await eventually(lambda: bank.balance(VISA) == before - 1250)
    bank.set_faults(delay=0.0)
    await eventually(lambda: bank.balance(VISA) == before)
    c2 = await fast.connect()
    s = await c2.call({"id": 2, "op": "status", "merchant_id": "M100", "order_id": "gone-1"})
    assert s["status"] == "reversed"


@pytest_twisted.ensureDeferred
async def test_approval_with_an_idempotency_key_stands_when_undelivered(fast):
    bank = fast.sims["bank_a"]
    before = bank.balance(VISA)
    bank.set_faults(delay=0.2)
    c = await fast.connect()
    c.send(authorize(1, order_id="gone-2", idempotency_key="gone-2"))
    await eventually(lambda: fast.switch.banks["bank_a"].connector.mux.in_flight == 1)
    c.transport.abortConnection()
    c2 = await fast.connect()
    replay = await c2.call(authorize(2, order_id="gone-2", idempotency_key="gone-2"))
    assert replay["status"] == "approved" and bank.balance(VISA) == before - 1250
