"""Bad bank answers through real sockets: checked before they are believed, masked before they are kept.

banksim's ``answer_fields`` fault writes over its answer after its ledger moved, as a
misbehaving host would: another amount, a blank or NUL response code, card data in
fields nobody expects.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from structlog.testing import capture_logs

from switch.journal.models import Direction
from tests.cardscan import problems
from tests.e2e.harness import authorize, eventually, start_env, stop_env

VISA = "4111111111111111"


@pytest_twisted.async_yield_fixture
async def env(tmp_path):
    e = await start_env(tmp_path)
    yield e
    await stop_env(e)


@pytest_twisted.async_yield_fixture
async def partial_env(tmp_path):
    e = await start_env(tmp_path, connector_extra="partial_approvals = true")
    yield e
    await stop_env(e)


async def _txn(env, txn_id):
    return await env.journal.get_transaction(txn_id)


async def _answer_in_journal(env, txn_id):
    return [m for m in await env.journal.messages(txn_id) if m.direction is Direction.IN and m.mti == "0210"]


@pytest_twisted.ensureDeferred
async def test_an_approval_echoing_another_amount_fails_with_format_error_and_is_reversed(env):
    bank = env.sims["bank_a"]
    before = bank.balance(VISA)
    bank.set_faults(answer_fields=(("4", "000000009999"),))
    c = await env.connect()
    a = await c.call(authorize(1))
    assert (a["status"], a["reason"], a["amount_authorized"]) == ("failed", "format_error", 0)
    await eventually(lambda: bank.received["0400"] >= 1)  # the bank debited: a reversal gives it back
    await eventually(lambda: bank.balance(VISA) == before)
    s = await c.call({"id": 2, "op": "status", "txn_id": a["txn_id"]})
    assert (s["status"], s["reason"]) == ("failed", "format_error")
    [answer] = await _answer_in_journal(env, a["txn_id"])
    assert answer.fields["4"] == "000000009999"


@pytest.mark.parametrize("code", ["  ", "0 ", "\x00\x00"])
@pytest_twisted.ensureDeferred
async def test_a_blank_padded_or_nul_response_code_is_a_final_format_error_at_once(env, code):
    bank = env.sims["bank_a"]
    before = bank.balance(VISA)
    bank.set_faults(answer_fields=(("39", code),))
    c = await env.connect()
    a = await c.call(authorize(1))
    assert (a["status"], a["reason"], a["response_code"]) == ("failed", "format_error", None)
    assert (await _txn(env, a["txn_id"])).status.value == "failed"  # final at once: nothing left pending
    [answer] = await _answer_in_journal(env, a["txn_id"])
    assert answer.fields["39"] == code
    await eventually(lambda: bank.balance(VISA) == before)  # the code cannot be read, so the sale is reversed


@pytest_twisted.ensureDeferred
async def test_card_data_in_unexpected_inbound_fields_is_masked_in_logs_and_journal_and_still_journalled(env):
    bank = env.sims["bank_a"]
    bank.set_faults(answer_fields=(("34", VISA), ("44", "4111 1111 1111 1111"), ("63", f";{VISA}=30121010000?")))
    c = await env.connect()
    with capture_logs() as logged:
        a = await c.call(authorize(1))
    assert a["status"] == "approved"
    [answer] = await _answer_in_journal(env, a["txn_id"])
    assert (answer.fields["34"], answer.fields["44"], answer.fields["63"]) == (
        "411111******1111", "4111 11** **** 1111", "[30 masked]")
    traced = [e for e in logged if e["event"] == "iso_in" and e.get("mti") == "0210"]
    assert traced and traced[0]["fields"]["34"] == "411111******1111"
    assert problems(json.dumps(logged, default=str)) == []
    assert [e["event"] for e in logged if e["log_level"] in ("error", "critical")] == []


@pytest_twisted.ensureDeferred
async def test_a_partial_approval_is_refused_and_reversed_where_the_connector_does_not_declare_it(env):
    bank = env.sims["bank_a"]
    before = bank.balance(VISA)
    bank.set_faults(answer_fields=(("39", "10"), ("4", "000000001000")))
    c = await env.connect()
    a = await c.call(authorize(1))
    assert (a["status"], a["reason"]) == ("failed", "format_error")
    await eventually(lambda: bank.balance(VISA) == before)


@pytest_twisted.ensureDeferred
async def test_a_declared_partial_approval_reaches_the_web_tier_with_the_approved_amount(partial_env):
    bank = partial_env.sims["bank_a"]
    bank.set_faults(answer_fields=(("39", "10"), ("4", "000000001000")))
    c = await partial_env.connect()
    a = await c.call(authorize(1))
    assert (a["status"], a["reason"], a["amount"], a["amount_authorized"], a["amount_captured"]) == (
        "approved", "partial_approval", 1250, 1000, 1000)
    bank.set_faults(answer_fields=(("4", "000000001300"),))  # more than asked is never a partial approval
    b = await c.call(authorize(2))
    assert (b["status"], b["reason"]) == ("failed", "format_error")


@pytest_twisted.ensureDeferred
async def test_a_refund_approved_for_another_amount_is_not_counted_and_is_reversed(env):
    bank = env.sims["bank_a"]
    before = bank.balance(VISA)
    c = await env.connect()
    sale = await c.call(authorize(1, amount=3000))
    bank.set_faults(answer_fields=(("4", "000000002000"),))
    refund = await c.call({"id": 2, "op": "refund", "txn_id": sale["txn_id"], "amount": 1000})
    assert (refund["status"], refund["amount_refunded"]) == ("approved", 0)
    # the bank may have credited 1000: the refund is being reversed, so it is not final yet
    assert (refund["operation"]["status"], refund["operation"]["reason"]) == ("pending", "format_error")
    await eventually(lambda: bank.received["0400"] >= 1)
    await eventually(lambda: bank.balance(VISA) == before - 3000)
    status = await c.call({"id": 3, "op": "status", "txn_id": sale["txn_id"]})
    assert status["amount_refunded"] == 0
    assert [op["status"] for op in status["operations"]] == ["reversed"]
