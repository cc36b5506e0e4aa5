"""A risk rule's step_up end to end, with the demo's banks and plugins: on Sakura (bank_b), whose plugin can
ask the bank to have the customer confirm, the payment waits for the customer and completes on their
approval; on Angkor (bank_a), which cannot, the rule acts as its ``otherwise``.  A payment waiting for
the customer holds its cumulative-limit counts; a rejection or an expiry gives them back."""

from __future__ import annotations

import pytest_twisted

from connectors.base import parse_tlv
from tests.e2e.harness import PLUGIN_BANKS, PLUGIN_ROUTES, authorize, eventually, start_env, stop_env
from tests.e2e.test_risk import VISA, rules
from tests.e2e.test_saf_cli import kswitch

MASTERCARD = "5555555555554444"  # an active card banksim would approve at once
STEP_UP = """
name = "big-step-up"
kind = "amount_limit"
action = "step_up"
otherwise = "block"
merchants = ["M100"]
max_amount = 100000
"""
CUSTOMER_LIMIT = """
name = "customer-limit"
kind = "cumulative"
action = "block"
per = "customer"
max_amount = 200000
window = 3600.0
"""


@pytest_twisted.async_yield_fixture
async def env(tmp_path):
    e = await start_env(tmp_path, banks=PLUGIN_BANKS, routes=PLUGIN_ROUTES, extra_config=rules(STEP_UP))
    yield e
    await stop_env(e)


async def status(env, txn_id):
    c = await env.connect()
    return await c.call({"id": 99, "op": "status", "txn_id": txn_id})


@pytest_twisted.ensureDeferred
async def test_step_up_on_a_bank_that_can_ask_waits_for_the_customer_and_completes_on_approval(env):
    c = await env.connect()
    sim = env.sims["bank_b"]
    before = sim.balance(MASTERCARD)
    small = await c.call(authorize(1, pan=MASTERCARD, amount=1000))
    assert small["status"] == "approved" and "risk" not in small  # under the limit: no rule, no confirmation
    a = await c.call(authorize(2, pan=MASTERCARD, amount=150000))
    assert (a["status"], a["reason"], a["connector"]) == ("pending_customer_action", "customer_action_required",
                                                          "bank_b"), a
    assert a["risk"] == {"rule": "big-step-up", "action": "step_up"}
    [ref] = sim.pending()
    assert a["confirmation_url"].endswith(f"/confirm/{ref}")
    assert parse_tlv(sim.issuer.pending[ref].request["48"])["04"] == "1"  # the switch asked for it
    assert sim.balance(MASTERCARD) == before - 1000  # nothing moves before the customer says so
    decision = await env.journal.risk_decision(a["txn_id"])
    assert (decision["action"], decision["rule"]) == ("step_up", "big-step-up")
    assert await sim.confirm(ref, approve=True) == "000"
    await eventually(lambda: _status_is(env, a["txn_id"], "approved"))
    s = await status(env, a["txn_id"])
    assert s["status"] == "approved" and s["risk"]["action"] == "step_up"
    assert sim.balance(MASTERCARD) == before - 1000 - 150000


@pytest_twisted.ensureDeferred
async def test_step_up_on_a_bank_that_cannot_ask_acts_as_otherwise(env):
    c = await env.connect()
    a = await c.call(authorize(1, pan=VISA, amount=150000))  # Visa goes to bank_a (Angkor: no step-up)
    assert (a["status"], a["reason"], a["connector"]) == ("declined", "risk_declined", "bank_a"), a
    assert a["risk"] == {"rule": "big-step-up", "action": "block"}
    assert env.sims["bank_a"].received["0200"] == 0, "a block sends nothing"
    decision = await env.journal.risk_decision(a["txn_id"])
    assert (decision["action"], decision["rule"]) == ("block", "big-step-up")
    assert decision["matches"][0]["action"] == "step_up"  # what the rule asked, beside what was done


@pytest_twisted.ensureDeferred
async def test_a_customer_rejecting_a_step_up_declines_the_payment(env):
    c = await env.connect()
    sim = env.sims["bank_b"]
    a = await c.call(authorize(1, pan=MASTERCARD, amount=150000))
    assert a["status"] == "pending_customer_action"
    await sim.confirm(sim.pending()[0], approve=False)
    await eventually(lambda: _status_is(env, a["txn_id"], "declined"))


async def _status_is(env, txn_id, *wanted):
    return (await env.journal.get_transaction(txn_id)).status.value in wanted



@pytest_twisted.ensureDeferred
async def test_explain_shows_a_step_up_and_what_it_falls_back_to(env, tmp_path):
    code, out, err = await kswitch("risk", "explain", "--pan", MASTERCARD, "--amount", "150000", "--currency", "USD",
                                   "--merchant", "M100", "--config", str(tmp_path / "kswitch.toml"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:4] == ["big-step-up", "amount_limit", "step_up", "enforce"] and "MATCH" in lines[1]
    assert lines[-1] == "decision: step_up by big-step-up (block where the connector cannot ask the customer to confirm)"


@pytest_twisted.async_yield_fixture
async def limited(tmp_path):
    e = await start_env(tmp_path, banks=PLUGIN_BANKS, routes=PLUGIN_ROUTES, extra_config=rules(CUSTOMER_LIMIT, STEP_UP),
                        connector_extra="confirmation_timeout = 1.0")
    yield e
    await stop_env(e)


async def _customer_limit_after(env, end) -> None:
    """A stepped-up 1,500.00 of customer c-1 (limit 2,000.00) ends by ``end``; then 1,000.00 more of
    theirs: blocked while the 1,500.00 is held, approved once it is given back."""
    c = await env.connect()
    customer = {"id": "c-1"}
    a = await c.call(authorize(1, pan=MASTERCARD, amount=150000, customer=customer))
    assert a["status"] == "pending_customer_action", a
    held = await c.call(authorize(2, pan=MASTERCARD, amount=100000, customer=customer))
    assert (held["status"], held["risk"]) == ("declined", {"rule": "customer-limit", "action": "block"}), held
    assert (await env.journal.risk_decision(held["txn_id"]))["matches"][0]["seen"]["amount"] == 150000
    ended = await end(a)
    b = await c.call(authorize(3, pan=MASTERCARD, amount=100000, customer=customer))
    assert b["status"] == "approved" and "risk" not in b, (ended, b)


@pytest_twisted.ensureDeferred
async def test_a_rejected_step_up_gives_the_customers_cumulative_counts_back(limited):
    async def reject(a):
        await limited.sims["bank_b"].confirm(limited.sims["bank_b"].pending()[0], approve=False)
        return await eventually(lambda: _status_is(limited, a["txn_id"], "declined"))

    await _customer_limit_after(limited, reject)


@pytest_twisted.ensureDeferred
async def test_an_expired_step_up_gives_the_customers_cumulative_counts_back(limited):
    async def expire(a):  # timeout, then reversed once the queued reversal is acknowledged
        return await eventually(lambda: _status_is(limited, a["txn_id"], "timeout", "reversed"))

    await _customer_limit_after(limited, expire)


@pytest_twisted.ensureDeferred
async def test_an_approved_step_up_keeps_its_counts(limited):
    c = await limited.connect()
    a = await c.call(authorize(1, pan=MASTERCARD, amount=150000, customer={"id": "c-1"}))
    await limited.sims["bank_b"].confirm(limited.sims["bank_b"].pending()[0], approve=True)
    await eventually(lambda: _status_is(limited, a["txn_id"], "approved"))
    b = await c.call(authorize(2, pan=MASTERCARD, amount=100000, customer={"id": "c-1"}))
    assert (b["status"], b["risk"]) == ("declined", {"rule": "customer-limit", "action": "block"}), b


VELOCITY_STEP_UP = """
name = "customer-velocity"
kind = "velocity"
action = "step_up"
per = "customer"
max_count = 1
window = 600.0
"""


@pytest_twisted.ensureDeferred
async def test_a_step_up_decided_by_a_counter_still_asks_the_bank(tmp_path):
    """Whether to ask for a step-up is guessed before the counters are read (the request is built and
    journalled in the commit that decides); a counting rule that steps up contradicts the guess, and the
    request is built again asking for it."""
    env = await start_env(tmp_path, banks=PLUGIN_BANKS, routes=PLUGIN_ROUTES, extra_config=rules(VELOCITY_STEP_UP))
    try:
        c = await env.connect()
        sim = env.sims["bank_b"]
        first = await c.call(authorize(1, pan=MASTERCARD, amount=1000, customer={"id": "c-9"}))
        assert first["status"] == "approved" and "risk" not in first, first
        second = await c.call(authorize(2, pan=MASTERCARD, amount=1000, customer={"id": "c-9"}))
        assert (second["status"], second["risk"]) == ("pending_customer_action",
                                                      {"rule": "customer-velocity", "action": "step_up"}), second
        [ref] = sim.pending()
        assert parse_tlv(sim.issuer.pending[ref].request["48"])["04"] == "1"
        sent = [m for m in await env.journal.messages(second["txn_id"]) if m.direction.value == "out"]
        assert len(sent) == 1, "the request is journalled once, as sent"
    finally:
        await stop_env(env)
