"""End to end through real sockets: JSON in on the API, ISO 8583 over mutual TLS to banksim,
rows in the journal, money in banksim's ledger."""

from __future__ import annotations

import gc
import types

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults

from tests.e2e.harness import authorize, eventually

VISA, MC = "4111111111111111", "5555555555554444"


@pytest_twisted.ensureDeferred
async def test_approved_sale_debits_and_is_journalled(env):
    c = await env.connect()
    before = env.sims["bank_a"].balance(VISA)
    a = await c.call(authorize(7))
    assert a["ok"] and a["id"] == 7
    assert (a["status"], a["response_code"], a["reason"], a["connector"]) == ("approved", "00", "approved", "bank_a")
    assert a["masked_pan"] == "411111******1111" and len(a["auth_code"]) == 6 and len(a["rrn"]) == 12
    assert env.sims["bank_a"].balance(VISA) == before - 1250
    txn = await env.journal.get_transaction(a["txn_id"])
    assert txn.status.value == "approved" and txn.amount_captured == 1250 and txn.masked_pan == "411111******1111"
    messages = await env.journal.messages(a["txn_id"])
    assert [m.mti for m in messages] == ["0200", "0210"]
    assert messages[0].fields["2"] == "411111******1111"


@pytest_twisted.ensureDeferred
async def test_a_payment_is_two_journal_writes_its_answer_committed_with_its_outcome(env):
    """The request commits with the new payment, the bank's answer with the outcome it decides: two writer
    units a payment (three when the answer was a unit of its own). The lease heartbeat, every 5 s, may add
    one write while the payments run."""
    committed = {"backend": "sqlite", "outcome": "committed"}
    c = await env.connect()
    await c.call(authorize(1))  # connections and caches warm: nothing but payments writes below
    before = env.registry.get_sample_value("kswitch_journal_writes_total", committed)
    answers = await gatherResults([ensureDeferred(c.call(authorize(n))) for n in range(2, 22)])
    assert {a["status"] for a in answers} == {"approved"}
    writes = env.registry.get_sample_value("kswitch_journal_writes_total", committed) - before
    assert writes in (40, 41), f"20 payments took {writes} journal writes"
    for a in answers[:3]:
        assert [(m.mti, m.direction.value) for m in await env.journal.messages(a["txn_id"])] == [
            ("0200", "out"), ("0210", "in")]


@pytest_twisted.ensureDeferred
async def test_1993_binary_bank_approves_mastercard(env):
    c = await env.connect()
    a = await c.call(authorize(1, pan=MC, capture=False))
    assert (a["status"], a["response_code"], a["connector"]) == ("approved", "000", "bank_b")
    assert env.sims["bank_b"].available(MC) == env.sims["bank_b"].balance(MC) - 1250


@pytest_twisted.ensureDeferred
async def test_declines_with_normalised_reasons(env):
    c = await env.connect()
    cases = [
        (authorize(1, pan="4000000000009995"), "51", "insufficient_funds"),
        (authorize(2, pan="4000000000000069", instrument={"type": "card", "pan": "4000000000000069", "expiry": "2001", "cvv": "123"}), "54", "expired_card"),
        (authorize(3, instrument={"type": "card", "pan": VISA, "expiry": "3012", "cvv": "999"}), "N7", "cvv_mismatch"),
        (authorize(4, pan="4000000000000002"), "05", "do_not_honour"),
    ]
    for request, code, reason in cases:
        a = await c.call(request)
        assert (a["status"], a["response_code"], a["reason"]) == ("declined", code, reason), a


@pytest_twisted.ensureDeferred
async def test_bank_link_down_fails_at_once_with_issuer_unavailable(env):
    await env.sims["bank_a"].close()
    await eventually(lambda: not env.switch.banks["bank_a"].ready)
    c = await env.connect()
    started = reactor.seconds()
    a = await c.call(authorize(1))
    assert (a["status"], a["reason"]) == ("failed", "issuer_unavailable")
    assert reactor.seconds() - started < 1.0  # answered without waiting for the 2 s bank timeout


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_are_answered_out_of_order(env):
    env.sims["bank_a"].set_faults(delay=0.5)
    c = await env.connect()
    c.send(authorize("slow-visa"))
    c.send(authorize("fast-mc", pan=MC))
    first, second = await c.answers.get(), await c.answers.get()
    assert (first["id"], second["id"]) == ("fast-mc", "slow-visa")
    assert first["status"] == second["status"] == "approved"


@pytest_twisted.ensureDeferred
async def test_forbidden_merchant_and_unauthenticated(env):
    c = await env.connect(hello=False)
    a = await c.call(authorize(1))
    assert a["error"]["code"] == "unauthenticated"
    other = await env.connect(client="other", token="e2e-token-0123456789-other")
    a = await other.call(authorize(2))
    assert (a["ok"], a["error"]["code"], a["error"]["field"]) == (False, "forbidden", "merchant_id")


@pytest_twisted.ensureDeferred
async def test_status_of_a_transaction_and_of_another_merchants(env):
    c = await env.connect()
    a = await c.call(authorize(1))
    s = await c.call({"id": 2, "op": "status", "txn_id": a["txn_id"]})
    assert s["status"] == "approved" and s["txn_id"] == a["txn_id"] and s["amount"] == 1250
    other = await env.connect(client="other", token="e2e-token-0123456789-other")
    s = await other.call({"id": 3, "op": "status", "txn_id": a["txn_id"]})
    assert s["error"]["code"] == "not_found"


@pytest_twisted.ensureDeferred
async def test_status_by_merchant_and_order_id(env):
    c = await env.connect()
    a = await c.call(authorize(1, order_id="shop-order-77"))
    s = await c.call({"id": 2, "op": "status", "merchant_id": "M100", "order_id": "shop-order-77"})
    assert (s["ok"], s["txn_id"], s["status"]) == (True, a["txn_id"], "approved")
    missing = await c.call({"id": 3, "op": "status", "merchant_id": "M100", "order_id": "no-such-order"})
    assert (missing["error"]["code"], missing["error"]["field"]) == ("not_found", "order_id")
    other = await env.connect(client="other", token="e2e-token-0123456789-other")
    forbidden = await other.call({"id": 4, "op": "status", "merchant_id": "M100", "order_id": "shop-order-77"})
    assert forbidden["error"]["code"] == "forbidden"
    neither = await c.call({"id": 5, "op": "status"})
    assert neither["error"]["code"] == "invalid_request" and neither["error"]["field"] == "txn_id"


def _suspended_coroutines() -> list[str]:
    gc.collect()
    return [o.__qualname__ for o in gc.get_objects()
            if isinstance(o, types.CoroutineType) and o.cr_frame is not None
            and "/switch/" in o.cr_frame.f_code.co_filename]


@pytest_twisted.ensureDeferred
async def test_a_payment_waiting_on_its_bank_keeps_no_suspended_coroutine(env):
    """Memory per pending payment: one written to its bank is an `InFlightPayment` on the mux's
    Deferred, not a chain of suspended coroutine frames (about 3 KB each with idempotency keys)."""
    env.sims["bank_a"].set_faults(delay=0.5)
    c = await env.connect()
    c.send(authorize(1, idempotency_key="held-1"))
    c.send(authorize(2))
    await eventually(lambda: env.switch.banks["bank_a"].connector.mux.in_flight == 2)
    assert _suspended_coroutines() == []
    answers = sorted([await c.answers.get(), await c.answers.get()], key=lambda a: a["id"])
    assert [(a["id"], a["status"]) for a in answers] == [(1, "approved"), (2, "approved")]
    assert answers[0]["order_id"] == "order-1" and answers[0]["masked_pan"] == "411111******1111"
