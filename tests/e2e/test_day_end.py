"""Day end through the running switch and both demo banks: a day of traffic, cutover (by an operator with
`kswitch cutover`, by the bank, with payments in flight), reconciliation by message in and out of balance."""

from __future__ import annotations

import json

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.web.client import Agent, readBody

from switch.domain.businessday import following
from switch.journal.dayend import OPERATORS
from tests.e2e.harness import (
    PLUGIN_BANKS,
    PLUGIN_ROUTES,
    Env,
    LineClient,
    authorize,
    eventually,
    http_get,
    start_env,
    stop_env,
)
from tests.e2e.test_saf_cli import kswitch

VISA, MC = "4111111111111111", "5555555555554444"
CONFIRM_CARD = "5200000000001005"  # banksim asks the customer to confirm every payment of this card
RECONCILE = 'reconciliation = "message"'


@pytest_twisted.async_yield_fixture
async def day(tmp_path):
    e = await start_env(tmp_path, request_timeout=1.0, banks=PLUGIN_BANKS, routes=PLUGIN_ROUTES,
                        connector_extra=RECONCILE)
    yield e
    await stop_env(e)


async def kswitch_cutover(env: Env, *args: str) -> tuple[int, str, str]:
    """`kswitch cutover ...` run as an operator runs it, against the running switch's admin server."""
    admin = () if "--admin" in args else ("--admin", f"127.0.0.1:{env.admin_port}")
    return await kswitch("cutover", *args, *admin, "--config", str(env.config_file))


async def status_is(env: Env, txn_id: str, status: str) -> bool:
    return (await env.journal.get_transaction(txn_id)).status.value == status


async def a_day_of_traffic(env: Env, c: LineClient, pan: str, n: int) -> list[str]:
    """Sales, a pre-authorization captured, a partial refund, a void, a timeout reversed; their txn ids."""
    bank = env.sims["bank_a" if pan == VISA else "bank_b"]
    sale = await c.call(authorize(f"{n}-sale", pan=pan, amount=10_000))
    assert sale["status"] == "approved", sale
    auth = await c.call(authorize(f"{n}-auth", pan=pan, amount=5_000, capture=False))
    cap = await c.call({"id": f"{n}-cap", "op": "capture", "txn_id": auth["txn_id"], "amount": 4_000})
    assert cap["status"] == "captured", cap
    refunded = await c.call(authorize(f"{n}-refunded", pan=pan, amount=3_000))
    refund = await c.call({"id": f"{n}-refund", "op": "refund", "txn_id": refunded["txn_id"], "amount": 1_200})
    assert refund["status"] == "partially_refunded", refund
    voided = await c.call(authorize(f"{n}-voided", pan=pan, amount=700))
    void = await c.call({"id": f"{n}-void", "op": "void", "txn_id": voided["txn_id"]})
    assert void["ok"], void
    bank.set_faults(drop_ratio=1.0)  # the bank debits, its answer is lost: the switch reverses
    lost = await c.call(authorize(f"{n}-lost", pan=pan, amount=900))
    assert lost["status"] == "timeout", lost
    bank.set_faults(drop_ratio=0.0)
    await eventually(lambda: status_is(env, lost["txn_id"], "reversed"))
    return [sale["txn_id"], auth["txn_id"], refunded["txn_id"], voided["txn_id"], lost["txn_id"]]


async def http_post(port: int, path: str) -> tuple[int, bytes]:
    response = await Agent(reactor).request(b"POST", f"http://127.0.0.1:{port}{path}".encode())
    return response.code, await readBody(response)


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


@pytest_twisted.ensureDeferred
async def test_a_mixed_day_on_both_banks_then_kswitch_cutover_all_balances(day):
    c = await day.connect()
    opened_on = {name: day.journal.business_date(name) for name in ("bank_a", "bank_b")}
    await a_day_of_traffic(day, c, VISA, 1)
    await a_day_of_traffic(day, c, MC, 2)
    code, out, err = await kswitch_cutover(day, "--all", "--json")
    assert (code, err) == (0, "")
    results = {r["bank"]: r for r in json.loads(out)}
    for name in ("bank_a", "bank_b"):
        closed = opened_on[name]
        assert results[name] == {"bank": name, "closed": closed, "opened": following(closed), "trigger": "operator",
                                 "reconciliation": "in_balance", "exceptions": 0}
        assert day.journal.business_date(name) == following(closed) == day.sims[name].day.business_date
        [rec] = await day.journal.reconciliations(name, closed)
        assert (rec.result, rec.currency, rec.exceptions) == ("in_balance", "USD", ())
        # the switch's totals, worked out by hand: sales 100.00 + 30.00, capture 40.00; refund 12.00; the
        # void and the timeout reversed within the day count nowhere; the pre-authorization is counted
        expected = {"debits_count": 3, "debits_amount": 17_000, "credits_count": 1, "credits_amount": 1_200,
                    "authorizations_count": 1, "debit_reversals_count": 0, "net": 15_800}
        assert {k: rec.switch_totals[k] for k in expected} == expected
        assert rec.bank_totals is not None and all(rec.bank_totals[k] == v for k, v in expected.items())
        assert day.sims[name].day.totals(closed)["USD"]["net"] == 15_800
    _, body = await http_get(day.admin_port, "/metrics")
    text = body.decode()
    assert metric(text, "kswitch_reconciliations_total", connector="bank_b", result="in_balance") == 1
    assert metric(text, "kswitch_cutovers_total", connector="bank_a", trigger="operator") == 1
    assert metric(text, "kswitch_reconciliation_in_balance", connector="bank_a") == 1
    days = metric(text, "kswitch_business_date_days", connector="bank_a")
    assert days is not None and days > 20_000


@pytest_twisted.ensureDeferred
async def test_a_posting_the_bank_dropped_is_out_of_balance_and_names_the_transaction(day):
    c = await day.connect()
    await a_day_of_traffic(day, c, VISA, 1)
    day.sims["bank_a"].set_faults(drop_posting=True)
    dropped = await c.call(authorize("dropped", amount=2_500))
    day.sims["bank_a"].set_faults(drop_posting=False)
    closed = day.journal.business_date("bank_a")
    code, out, err = await kswitch_cutover(day, "bank_a", "--json")
    result = json.loads(out)
    assert (code, err, result["reconciliation"], result["closed"]) == (1, "", "out_of_balance", closed)
    [rec] = await day.journal.reconciliations("bank_a", closed)
    assert rec.result == "out_of_balance"
    assert (rec.switch_totals["debits_amount"] - rec.bank_totals["debits_amount"]) == 2_500
    named = [e for e in rec.exceptions if e.txn_id is not None]
    assert [(e.kind, e.txn_id) for e in named] == [("missing_at_bank", dropped["txn_id"])]
    assert {e.detail for e in rec.exceptions} >= {"debits_count: switch 4, bank 3"}
    events = await day.journal.events_after([OPERATORS], 0)
    assert [(e.type, e.payload["connector"], e.payload["business_date"]) for e in events] == [
        ("reconciliation.out_of_balance", "bank_a", closed)]
    _, body = await http_get(day.admin_port, "/metrics")
    assert metric(body.decode(), "kswitch_reconciliation_in_balance", connector="bank_a") == 0
    assert metric(body.decode(), "kswitch_reconciliation_exceptions_total", connector="bank_a") == len(rec.exceptions)


@pytest_twisted.ensureDeferred
async def test_a_payment_in_flight_at_cutover_keeps_its_date_and_is_waited_for(day):
    bank = day.sims["bank_b"]
    c = await day.connect()
    closed = day.journal.business_date("bank_b")
    bank.set_faults(delay=0.6)  # under the 1 s timeout: the sale's answer comes after the cutover
    c.send(authorize("slow", pan=MC, amount=4_200))
    await eventually(lambda: bank.received["1200"] == 1)
    assert await bank.cutover() == "000"  # the switch answers the bank at once, the sale still in flight
    assert day.journal.business_date("bank_b") == following(closed)
    slow = await c.answers.get()
    row = await day.journal.get_transaction(slow["txn_id"])
    assert (slow["status"], row.business_date) == ("approved", closed)
    recs = await eventually(lambda: day.journal.reconciliations("bank_b", closed), timeout=15)
    bank.set_faults(delay=0.0)
    assert recs[0].result == "in_balance"
    assert (recs[0].switch_totals["debits_count"], recs[0].switch_totals["debits_amount"]) == (1, 4_200)


@pytest_twisted.ensureDeferred
async def test_the_bank_cuts_over_and_the_switch_follows_and_reconciles(day):
    bank = day.sims["bank_a"]
    c = await day.connect()
    sale = await c.call(authorize(1, amount=1_000))
    closed = day.journal.business_date("bank_a")
    assert (await day.journal.get_transaction(sale["txn_id"])).business_date == closed
    code = await bank.cutover()
    assert code == "00"
    assert day.journal.business_date("bank_a") == bank.day.business_date == following(closed)
    assert day.journal.business_date("bank_b") == closed  # only that bank's day ended
    recs = await eventually(lambda: day.journal.reconciliations("bank_a", closed))
    assert recs[0].result == "in_balance" and recs[0].switch_totals["debits_amount"] == 1_000
    [closed_day] = [d for d in await day.journal.business_days("bank_a") if d.state == "closed"]
    assert (closed_day.business_date, closed_day.closed_by) == (closed, "bank")


@pytest_twisted.ensureDeferred
async def test_the_banks_settlement_date_in_field_15_dates_the_row(day):
    bank = day.sims["bank_b"]
    ours = day.journal.business_date("bank_b")
    bank.day.cutover()  # the bank moved on without telling us: it books on the next date
    c = await day.connect()
    sale = await c.call(authorize(1, pan=MC, amount=1_000))
    row = await day.journal.get_transaction(sale["txn_id"])
    assert (row.business_date, day.journal.business_date("bank_b")) == (following(ours), ours)


@pytest_twisted.ensureDeferred
async def test_kswitch_cutover_errors_are_one_line_with_exit_2(day):
    code, out, err = await kswitch_cutover(day, "bank_z")
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith("kswitch: cutover refused: unknown bank 'bank_z'; configured: bank_a, bank_b")
    code, out, err = await kswitch_cutover(day, "bank_a", "--admin", "127.0.0.1:1")
    assert code == 2 and err.startswith("kswitch: cannot reach the switch's admin server at 127.0.0.1:1")
    day.sims["bank_a"].set_faults(delay=0.5)  # the first cutover waits for the bank's 0810
    busy = day.switch.day_end.cutover("bank_a")
    status, body = await http_post(day.admin_port, "/cutover?bank=bank_a")
    await busy
    assert (status, json.loads(body)) == (409, {"error": "bank_a: a cutover of bank_a is already running"})
    status, _ = await http_get(day.admin_port, "/cutover?bank=bank_a")
    assert status == 405  # a GET (a scrape, a link followed) never cuts over



@pytest_twisted.ensureDeferred
async def test_a_payment_the_customer_confirms_after_cutover_lands_on_the_day_the_bank_booked_it(day):
    """Waiting for the customer is not in flight at the bank: the cutover does not wait for it, and the money
    moves when the customer answers, so the payment belongs to the day open then (both sides agree)."""
    sim = day.sims["bank_b"]
    c = await day.connect()
    closed = day.journal.business_date("bank_b")
    waiting = await c.call(authorize("confirm", pan=CONFIRM_CARD, amount=2_000))
    assert waiting["status"] == "pending_customer_action", waiting
    code, out, _ = await kswitch_cutover(day, "bank_b", "--json")
    assert (code, json.loads(out)["reconciliation"]) == (0, "in_balance")
    [ref] = sim.pending()
    assert await sim.confirm(ref, approve=True) == "000"
    await eventually(lambda: status_is(day, waiting["txn_id"], "approved"))
    assert (await day.journal.get_transaction(waiting["txn_id"])).business_date == following(closed)
    code, out, _ = await kswitch_cutover(day, "bank_b", "--json")
    result = json.loads(out)
    assert (code, result["closed"], result["reconciliation"]) == (0, following(closed), "in_balance")
    [rec] = await day.journal.reconciliations("bank_b", following(closed))
    assert (rec.switch_totals["debits_count"], rec.switch_totals["debits_amount"]) == (1, 2_000)
