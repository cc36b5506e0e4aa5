"""Captures, refunds and voids under faults, through real sockets, with banksim's ledger as the
witness: uncertain advices are repeated (never reversed), refunds reserve before sending,
a message the dialect cannot carry is never journalled as sent, operations are idempotent,
and ``status`` lists a payment's operations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from switch.domain.carddata import CardData
from switch.domain.status import Kind, Status
from switch.engine.recovery import recover
from switch.journal import CommitOutcomeUnknown, again
from switch.journal.models import Direction, NewTransaction, SafDraft, SafKind, SafState, utc_from_seconds
from switch.tools.banksim import ORIGINAL_KINDS
from tests.e2e.harness import TOKEN, authorize, eventually, start_env, stop_env

VISA = "4111111111111111"
ODD_TOKEN = f"{TOKEN}-odd"
ODD_MERCHANT = f"""
[[clients]]
name = "odd"
token = "{ODD_TOKEN}"
merchants = ["M300"]

[[merchants]]
id = "M300"
name = "CAFÉ ÉTOILE"
city = "PHNOM PENH"
country = "KH"
mcc = "5812"
acquirer_merchant_id = "000000000300003"
stores = [{{ id = "web", terminal_id = "WEB00003" }}]
"""


@pytest_twisted.async_yield_fixture
async def fast(tmp_path):
    e = await start_env(tmp_path, request_timeout=0.5, extra_config=ODD_MERCHANT)
    yield e
    await stop_env(e)


async def _txn(env, txn_id):
    return await env.journal.get_transaction(txn_id)


async def _events(env, kind):
    return [e for e in await env.journal.events_after(["M100"], 0) if e.type == kind]


def _debits(sim, pan):
    return [p for p in sim.ledger.postings(ORIGINAL_KINDS, number=pan) if p.effect == "debit" and not p.reversed]


@pytest.mark.parametrize("name, pan, repeat, reversals", [
    ("bank_a", VISA, "0221", ("0400", "0420")),  # ISO 8583:1987
    ("bank_b", "5555555555554444", "1221", ("1420",)),  # ISO 8583:1993
])
@pytest_twisted.ensureDeferred
async def test_timed_out_capture_is_repeated_and_captured_exactly_once(fast, name, pan, repeat, reversals):
    bank = fast.sims[name]
    before = bank.balance(pan)
    c = await fast.connect()
    a = await c.call(authorize(1, pan=pan, amount=5000, capture=False))
    assert a["status"] == "approved"
    bank.set_faults(drop_ratio=1.0)  # the bank completes the capture but its answer is lost
    cap = await c.call({"id": 2, "op": "capture", "txn_id": a["txn_id"], "amount": 4000})
    assert cap["ok"] and cap["status"] == "approved" and cap["amount_captured"] == 0
    assert (cap["operation"]["status"], cap["operation"]["reason"]) == ("pending", "issuer_timeout")
    again = await c.call({"id": 3, "op": "capture", "txn_id": a["txn_id"]})
    assert again["error"]["code"] == "invalid_state"  # no second capture while the first is resolved
    bank.set_faults(drop_ratio=0.0)

    async def captured():
        return (await _txn(fast, a["txn_id"])).status is Status.CAPTURED

    await eventually(captured)
    assert bank.received[repeat] >= 1 and sum(bank.received[m] for m in reversals) == 0
    assert len(_debits(bank, pan)) == 1 and bank.balance(pan) == before - 4000
    assert bank.available(pan) == before - 4000  # the hold went with the one completion
    s = await c.call({"id": 4, "op": "status", "txn_id": a["txn_id"]})
    assert (s["status"], s["amount_captured"]) == ("captured", 4000)
    assert [(o["kind"], o["status"], o["amount"]) for o in s["operations"]] == [("capture", "approved", 4000)]
    assert [e.txn_id for e in await _events(fast, "payment.captured")] == [a["txn_id"]]
    messages = await fast.journal.messages(cap["operation"]["txn_id"])
    sent = [(m.mti, m.stan) for m in messages if m.direction is Direction.OUT]
    assert sent[0][0] == repeat[:3] + "0" and {stan for _, stan in sent} == {cap["operation"]["stan"]}  # same STAN
    items = await fast.journal.saf_items(cap["operation"]["txn_id"])
    assert [(i.kind, i.state) for i in items] == [(SafKind.ADVICE, SafState.DONE)]


@pytest_twisted.ensureDeferred
async def test_timed_out_refund_is_reversed_and_its_reservation_released(fast):
    bank = fast.sims["bank_a"]
    before = bank.balance(VISA)
    c = await fast.connect()
    sale = await c.call(authorize(1, amount=3000))
    bank.set_faults(drop_ratio=1.0)
    r = await c.call({"id": 2, "op": "refund", "txn_id": sale["txn_id"], "amount": 2000})
    assert r["operation"]["status"] == "pending" and r["amount_refunded"] == 0
    more = await c.call({"id": 3, "op": "refund", "txn_id": sale["txn_id"], "amount": 1001})
    assert (more["error"]["code"], more["error"]["field"]) == ("invalid_request", "amount")  # 2000 reserved
    bank.set_faults(drop_ratio=0.0)

    async def reversed_():
        return (await _txn(fast, r["operation"]["txn_id"])).status is Status.REVERSED

    await eventually(reversed_)
    parent = await _txn(fast, sale["txn_id"])
    assert (parent.status, parent.amount_refunded, parent.amount_refund_pending) == (Status.APPROVED, 0, 0)
    assert bank.balance(VISA) == before - 3000  # the credit was taken back
    assert [(e.txn_id, e.payload["operation_txn_id"]) for e in await _events(fast, "payment.refund_reversed")] == [
        (sale["txn_id"], r["operation"]["txn_id"])]
    full = await c.call({"id": 4, "op": "refund", "txn_id": sale["txn_id"]})
    assert (full["status"], full["amount_refunded"]) == ("refunded", 3000)
    assert bank.balance(VISA) == before


@pytest_twisted.ensureDeferred
async def test_concurrent_refunds_over_the_captured_amount_one_is_refused_before_sending(env):
    bank = env.sims["bank_a"]
    before = bank.balance(VISA)
    c1, c2 = await env.connect(), await env.connect()
    sale = await c1.call(authorize(1, amount=3000))
    bank.set_faults(delay=1.0)  # well inside the 2 s request timeout
    c1.send({"id": 2, "op": "refund", "txn_id": sale["txn_id"], "amount": 2000})
    await eventually(lambda: env.switch.banks["bank_a"].connector.mux.in_flight == 1)
    refused = await c2.call({"id": 3, "op": "refund", "txn_id": sale["txn_id"], "amount": 2000})
    assert (refused["error"]["code"], refused["error"]["field"]) == ("invalid_request", "amount")
    assert env.switch.banks["bank_a"].connector.mux.in_flight == 1  # refused while the first was at the bank
    first = await c1.answers.get()
    assert (first["status"], first["amount_refunded"]) == ("partially_refunded", 2000)
    assert bank.received["0200"] == 2 and bank.balance(VISA) == before - 1000


@pytest_twisted.ensureDeferred
async def test_message_the_dialect_cannot_carry_fails_cleanly_and_is_never_reversed(fast):
    bank = fast.sims["bank_a"]
    mux = fast.switch.banks["bank_a"].connector.mux
    c = await fast.connect(client="odd", token=ODD_TOKEN)
    a = await c.call(authorize(1, merchant_id="M300"))
    assert a["ok"] and (a["status"], a["reason"]) == ("failed", "message_not_encodable"), a
    assert await fast.journal.messages(a["txn_id"]) == []  # nothing journalled as sent
    assert (await _txn(fast, a["txn_id"])).status is Status.FAILED
    assert bank.received["0200"] == 0 and len(mux.stans) == 0  # never left; its STAN released
    assert await fast.journal.saf_list(states=(SafState.QUEUED, SafState.DEAD)) == []


@pytest_twisted.ensureDeferred
async def test_lifecycle_idempotency_sequential_concurrent_and_conflicting(env):
    bank = env.sims["bank_a"]
    c1, c2 = await env.connect(), await env.connect()
    pre = await c1.call(authorize(1, amount=5000, capture=False, idempotency_key="pay-1"))
    cap = {"op": "capture", "txn_id": pre["txn_id"], "amount": 5000, "idempotency_key": "cap-1"}
    first = await c1.call({"id": 2, **cap})
    second = await c1.call({"id": 3, **cap})
    assert first["operation"]["txn_id"] == second["operation"]["txn_id"] and second["status"] == "captured"
    assert bank.received["0220"] == 1
    bank.set_faults(delay=0.3)
    refund = {"op": "refund", "txn_id": pre["txn_id"], "amount": 700, "idempotency_key": "ref-1"}
    c1.send({"id": 4, **refund})
    c2.send({"id": 4, **refund})
    x, y = await c1.answers.get(), await c2.answers.get()
    assert x["operation"]["txn_id"] == y["operation"]["txn_id"] and x["amount_refunded"] == y["amount_refunded"] == 700
    assert bank.received["0200"] == 1
    bank.set_faults(delay=0.0)
    for conflicting in ({**refund, "amount": 701}, {**cap, "idempotency_key": "pay-1"},
                        {"op": "void", "txn_id": pre["txn_id"], "idempotency_key": "ref-1"}):
        answer = await c1.call({"id": 5, **conflicting})
        assert (answer["error"]["code"], answer["error"]["field"]) == ("idempotency_conflict", "idempotency_key")
    replay = await c2.call({"id": 6, **authorize(1, amount=5000, capture=False, idempotency_key="pay-1")})
    assert replay["txn_id"] == pre["txn_id"] and replay["status"] == "partially_refunded"


@pytest_twisted.ensureDeferred
async def test_status_lists_operations_and_their_sum_is_the_parent_totals(fast):
    c = await fast.connect()
    sale = await c.call(authorize(1, amount=3000))
    r1 = await c.call({"id": 2, "op": "refund", "txn_id": sale["txn_id"], "amount": 1000})
    r2 = await c.call({"id": 3, "op": "refund", "txn_id": sale["txn_id"], "amount": 500})
    s = await c.call({"id": 4, "op": "status", "txn_id": sale["txn_id"]})
    ops = s["operations"]
    assert [o["txn_id"] for o in ops] == [r1["operation"]["txn_id"], r2["operation"]["txn_id"]]
    assert {(o["kind"], o["status"]) for o in ops} == {("refund", "approved")} and all(o["created_at"] for o in ops)
    assert s["amount_refunded"] == sum(o["amount"] for o in ops) == 1500
    by_order = await c.call({"id": 5, "op": "status", "merchant_id": "M100", "order_id": "order-1"})
    assert by_order["operations"] == ops
    pre = await c.call(authorize(6, amount=800, capture=False))
    v = await c.call({"id": 7, "op": "void", "txn_id": pre["txn_id"]})
    assert v["status"] == "reversed" and v["operation"]["kind"] == "void"
    s = await c.call({"id": 8, "op": "status", "txn_id": pre["txn_id"]})
    assert [(o["kind"], o["status"]) for o in s["operations"]] == [("void", "approved")]


@pytest_twisted.ensureDeferred
async def test_recovery_settles_an_acknowledged_advice_whose_outcome_was_not_journalled(fast):
    """A crash between store-and-forward's 'acknowledged' and the operation's outcome: the
    restart settles the capture and its parent together from the acknowledged item."""
    journal = fast.journal
    c = await fast.connect()
    pre = await c.call(authorize(1, amount=2000, capture=False))
    _, cap = await journal.begin_operation(
        pre["txn_id"], NewTransaction(kind=Kind.CAPTURE, parent_txn_id=pre["txn_id"], merchant_id="M100",
                                      connector="bank_a", amount=2000, currency="USD", card=CardData(VISA, "3012"),
                                      retain_card=True, stan="000321"),
        allowed=(Status.APPROVED,), request=("0220", {"11": "000321"}))
    later = utc_from_seconds(reactor.seconds()) + timedelta(hours=1)  # out of the running queue's way
    await journal.finish_operation(cap.txn_id, to=Status.TIMEOUT, reason="issuer_timeout", saf=SafDraft(
        connector="bank_a", kind=SafKind.ADVICE, mti="0221", fields={"11": "000321"}, due_at=later))
    item = (await journal.saf_items(cap.txn_id))[0]
    await journal.saf_complete(item.saf_id, response_code="00")
    assert await recover(reactor, journal, fast.switch.banks, fast.switch.saf, fast.registry) == 1
    parent, child = await _txn(fast, pre["txn_id"]), await _txn(fast, cap.txn_id)
    assert (parent.status, parent.amount_captured, parent.amount_capture_pending) == (Status.CAPTURED, 2000, 0)
    assert child.status is Status.APPROVED and child.card is None


@pytest_twisted.ensureDeferred
async def test_recovery_whose_commit_is_unknown_resolves_the_payment_once(fast, monkeypatch):
    """The writer process dies with recovery's batch (it committed): recovery reads the payment again and leaves
    it to the reversal it queued, instead of stopping the start (found by the chaos test's writer kills)."""
    journal = fast.journal
    monkeypatch.setattr(again, "SECONDS", 0.01)
    pending = await journal.create_transaction(
        NewTransaction(kind=Kind.AUTHORIZATION, merchant_id="M100", connector="bank_a", amount=700, currency="USD",
                       card=CardData(VISA, "3012"), stan="000654"),
        request=("0100", {"3": "000000", "4": "000000000700", "11": "000654", "41": "TERM0001"}))
    real, lost = journal.transition, []

    def unknown(_: object) -> None:
        raise CommitOutcomeUnknown("the sqlite journal writer process ended during a batch")

    def unknown_once(*args: Any, **kwargs: Any) -> Any:
        done = real(*args, **kwargs)
        if not lost:
            lost.append(args[0])
            done.addCallback(unknown)
        return done

    monkeypatch.setattr(journal, "transition", unknown_once)
    assert await recover(reactor, journal, fast.switch.banks, fast.switch.saf, fast.registry) == 1
    assert lost == [pending.txn_id]
    assert (await _txn(fast, pending.txn_id)).status is Status.TIMEOUT
    items = await journal.saf_items(pending.txn_id)
    assert [(i.kind, i.mti) for i in items] == [(SafKind.REVERSAL, "0400")], "one reversal, not two"
