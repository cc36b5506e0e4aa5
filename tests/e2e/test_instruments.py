"""Bank accounts, wallets and customer-confirmed payments through real sockets, with the demo's
two banks and their plugins: Angkor (1987 ASCII, 2b + TPDU) and Sakura (1993 binary, 4a)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import pytest_twisted

from switch.ops.config import load_config
from switch.ops.settings import ConfigError
from tests.conftest import LOG_FILE
from tests.e2e.harness import PLUGIN_BANKS, PLUGIN_ROUTES, authorize, config_text, eventually, start_env, stop_env

ACCOUNT, CONFIRM_ACCOUNT, WALLET = "000123456789", "000987654321", "0812345678"
CONFIRM_CARD = "5200000000001005"


@pytest_twisted.async_yield_fixture
async def banks(tmp_path):
    e = await start_env(tmp_path, request_timeout=0.5, banks=PLUGIN_BANKS, routes=PLUGIN_ROUTES,
                        connector_extra="confirmation_timeout = 1.5")
    yield e
    await stop_env(e)


def bank_account(i, account=ACCOUNT, **extra):
    instrument = {"type": "bank_account", "bank": "ABA", "account": account, "holder_id": "KH-ID-778899",
                  "account_type": "savings"}
    return authorize(i, instrument=instrument, **extra)


def wallet(i, provider="TRUEMONEY", wallet_id=WALLET):
    return authorize(i, instrument={"type": "wallet", "provider": provider, "wallet_id": wallet_id})


async def events(env, kind):
    return [e for e in await env.journal.events_after(["M100"], 0) if e.type == kind]


async def status_is(env, txn_id, status):
    return (await env.journal.get_transaction(txn_id)).status.value == status


@pytest_twisted.ensureDeferred
async def test_bank_account_goes_to_its_bank_by_bank_code_masked_everywhere(banks):
    c = await banks.connect()
    sim = banks.sims["bank_b"]
    before = sim.balance(ACCOUNT)
    a = await c.call(bank_account(1))
    assert (a["status"], a["connector"], a["response_code"]) == ("approved", "bank_b", "000"), a
    assert a["masked_pan"] == "********6789" and sim.balance(ACCOUNT) == before - 1250
    txn = await banks.journal.get_transaction(a["txn_id"])
    assert txn.masked_pan == "********6789"
    sent = (await banks.journal.messages(a["txn_id"]))[0]
    assert sent.mti == "1200" and sent.fields["102"] == "********6789" and "2" not in sent.fields
    assert sent.fields["3"] == "001000"  # purchase from a savings account
    assert sent.fields["48"].endswith("masked]")  # Sakura's order TLV (holder id inside) stays out of the journal


@pytest_twisted.ensureDeferred
async def test_wallet_goes_to_angkor_with_the_provider_in_its_private_field(banks):
    c = await banks.connect()
    a = await c.call(wallet(1))
    assert (a["status"], a["connector"]) == ("approved", "bank_a"), a
    sent = (await banks.journal.messages(a["txn_id"]))[0]
    assert sent.fields["102"].endswith("5678") and WALLET not in sent.fields["102"]
    assert sent.fields["63"] == "WP009TRUEMONEY"
    assert banks.sims["bank_a"].balance(f"TRUEMONEY:{WALLET}") == 200000 - 1250


@pytest_twisted.ensureDeferred
async def test_bank_account_timeout_is_reversed_with_the_account(banks):
    sim = banks.sims["bank_b"]
    before = sim.balance(ACCOUNT)
    sim.set_faults(drop_ratio=1.0)
    c = await banks.connect()
    a = await c.call(bank_account(1))
    assert a["status"] == "timeout" and sim.balance(ACCOUNT) == before - 1250
    sim.set_faults(drop_ratio=0.0)
    await eventually(lambda: status_is(banks, a["txn_id"], "reversed"))
    assert sim.balance(ACCOUNT) == before and sim.received["1420"] + sim.received["1421"] >= 1


@pytest_twisted.ensureDeferred
async def test_bank_account_preauth_is_captured_and_refunded_with_the_account(banks):
    c = await banks.connect()
    sim = banks.sims["bank_b"]
    a = await c.call(bank_account(1, capture=False))
    assert a["status"] == "approved" and sim.available(ACCOUNT) == 500000 - 1250
    cap = await c.call({"id": 2, "op": "capture", "txn_id": a["txn_id"], "amount": 1000})
    assert (cap["status"], cap["operation"]["status"]) == ("captured", "approved"), cap
    ref = await c.call({"id": 3, "op": "refund", "txn_id": a["txn_id"], "amount": 400})
    assert ref["status"] == "partially_refunded", ref
    assert sim.balance(ACCOUNT) == sim.available(ACCOUNT) == 500000 - 1000 + 400


@pytest.mark.parametrize("instrument, field", [
    ({"type": "bank_account", "account": ACCOUNT}, "instrument.bank"),
    ({"type": "bank_account", "bank": "aba", "account": ACCOUNT}, "instrument.bank"),
    ({"type": "bank_account", "bank": "ABA"}, "instrument.account"),
    ({"type": "bank_account", "bank": "ABA", "account": "12 34"}, "instrument.account"),
    ({"type": "bank_account", "bank": "ABA", "account": ACCOUNT, "holder_id": "x"}, "instrument.holder_id"),
    ({"type": "bank_account", "bank": "ABA", "account": ACCOUNT, "account_type": "credit"}, "instrument.account_type"),
    ({"type": "bank_account", "bank": "ABA", "account": ACCOUNT, "pan": "4111111111111111"}, "instrument.pan"),
    ({"type": "wallet", "wallet_id": WALLET}, "instrument.provider"),
    ({"type": "wallet", "provider": "TRUEMONEY"}, "instrument.wallet_id"),
    ({"type": "wallet", "provider": "TRUEMONEY", "wallet_id": "08-12"}, "instrument.wallet_id"),
    ({"type": "cheque"}, "instrument.type"),
])
@pytest_twisted.ensureDeferred
async def test_each_instrument_field_is_validated(banks, instrument, field):
    c = await banks.connect()
    a = await c.call(authorize(1, instrument=instrument))
    assert (a["ok"], a["error"]["code"], a["error"]["field"]) == (False, "invalid_request", field), a
    assert ACCOUNT not in a["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_customer_confirms_at_the_bank(banks):
    c = await banks.connect()
    sim = banks.sims["bank_b"]
    before = sim.balance(CONFIRM_CARD)
    a = await c.call(authorize(1, pan=CONFIRM_CARD))
    assert (a["status"], a["reason"]) == ("pending_customer_action", "customer_action_required"), a
    [ref] = sim.pending()
    assert a["confirmation_url"].endswith(f"/confirm/{ref}") and sim.balance(CONFIRM_CARD) == before
    s = await c.call({"id": 2, "op": "status", "txn_id": a["txn_id"]})
    assert (s["status"], s["confirmation_url"]) == ("pending_customer_action", a["confirmation_url"])
    assert await sim.confirm(ref, approve=True) == "000"
    await eventually(lambda: status_is(banks, a["txn_id"], "approved"))
    assert sim.balance(CONFIRM_CARD) == before - 1250
    [done] = await events(banks, "payment.completed")
    assert done.payload["txn_id"] == a["txn_id"] and done.payload["status"] == "approved"
    assert done.payload["response_code"] == "000" and len(done.payload["auth_code"]) == 6
    txn = await banks.journal.get_transaction(a["txn_id"])
    assert txn.amount_captured == 1250 and txn.auth_code == done.payload["auth_code"]
    mtis = [m.mti for m in await banks.journal.messages(a["txn_id"])]
    assert mtis == ["1200", "1210", "1220", "1230"]


@pytest_twisted.ensureDeferred
async def test_customer_rejects_at_the_bank(banks):
    c = await banks.connect()
    sim = banks.sims["bank_b"]
    a = await c.call(bank_account(1, account=CONFIRM_ACCOUNT))
    assert a["status"] == "pending_customer_action"
    await sim.confirm(sim.pending()[0], approve=False)
    await eventually(lambda: status_is(banks, a["txn_id"], "declined"))
    [done] = await events(banks, "payment.completed")
    assert (done.payload["status"], done.payload["reason"]) == ("declined", "do_not_honour")
    assert sim.balance(CONFIRM_ACCOUNT) == 500000


@pytest_twisted.ensureDeferred
async def test_an_advice_without_a_readable_code_fails_the_payment_and_reverses_it(banks, monkeypatch):
    c = await banks.connect()
    sim = banks.sims["bank_b"]
    before = sim.balance(CONFIRM_CARD)
    a = await c.call(authorize(1, pan=CONFIRM_CARD))
    assert a["status"] == "pending_customer_action"
    advice = sim._advice
    without_code = lambda request, code, auth: {k: v for k, v in advice(request, code, auth).items() if k != "39"}
    monkeypatch.setattr(sim, "_advice", without_code)
    assert await sim.confirm(sim.pending()[0], approve=True) == "000"  # told, not asked: still acknowledged
    await eventually(lambda: status_is(banks, a["txn_id"], "failed"))
    assert (await banks.journal.get_transaction(a["txn_id"])).reason == "format_error"
    await eventually(lambda: sim.received["1420"] >= 1)  # the bank may have approved: reversed
    await eventually(lambda: sim.balance(CONFIRM_CARD) == before)


@pytest_twisted.ensureDeferred
async def test_no_decision_in_time_expires_and_is_reversed(banks):
    c = await banks.connect()
    a = await c.call(authorize(1, pan=CONFIRM_CARD))
    assert a["status"] == "pending_customer_action"
    await eventually(lambda: status_is(banks, a["txn_id"], "reversed"), timeout=10)
    [expired] = await events(banks, "payment.expired")
    assert expired.payload == {"txn_id": a["txn_id"], "reason": "customer_action_expired"}
    assert len(await events(banks, "payment.reversed")) == 1
    late = banks.sims["bank_b"].confirm(banks.sims["bank_b"].pending()[0])  # the customer comes back too late
    assert await late == "000"
    assert await status_is(banks, a["txn_id"], "reversed")


@pytest_twisted.ensureDeferred
async def test_restart_rearms_the_expiry_of_a_waiting_payment(tmp_path):
    first = await start_env(tmp_path, banks=PLUGIN_BANKS, routes=PLUGIN_ROUTES,
                            connector_extra="confirmation_timeout = 30")
    c = await first.connect()
    a = await c.call(authorize(1, pan=CONFIRM_CARD))
    await stop_env(first)
    second = await start_env(tmp_path, banks=PLUGIN_BANKS, routes=PLUGIN_ROUTES,
                             connector_extra="confirmation_timeout = 30")
    try:
        assert await status_is(second, a["txn_id"], "pending_customer_action")
        assert second.switch.confirmations.waiting == 1
    finally:
        await stop_env(second)


def test_no_account_number_reaches_the_logs():
    text = LOG_FILE.read_text(encoding="utf-8") if LOG_FILE.exists() else ""
    for secret in (ACCOUNT, CONFIRM_ACCOUNT, WALLET, "KH-ID-778899"):
        assert secret not in text


def test_unknown_plugin_is_refused_at_start_naming_the_registered_ones(tmp_path):
    banks = {**PLUGIN_BANKS, "bank_b": {**PLUGIN_BANKS["bank_b"], "plugin": "fuji"}}
    cfg = tmp_path / "kswitch.toml"
    cfg.write_text(config_text(tmp_path, {"bank_a": 1, "bank_b": 2}, 1.0, banks=banks))
    with pytest.raises(ConfigError, match=r"connectors\[1\]\.plugin: unknown connector plugin 'fuji'; "
                                          r"registered: angkor, sakura"):
        load_config(cfg)


def test_kswitch_route_explains_bank_account_routing(tmp_path):
    cfg = tmp_path / "kswitch.toml"
    cfg.write_text(config_text(tmp_path, {"bank_a": 1, "bank_b": 2}, 1.0, banks=PLUGIN_BANKS, routes=PLUGIN_ROUTES))
    out = subprocess.run([sys.executable, "-m", "switch.cli", "route", "--config", str(cfg), "--instrument",
                          "bank_account", "--bank", "ABA", "--amount", "1250", "--currency", "USD"],
                         capture_output=True, text=True, check=True).stdout
    assert "rule 'aba-accounts' (instrument in ['bank_account'] and bank in ['ABA']) -> bank_b" in out
