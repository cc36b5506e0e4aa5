"""Plugins shape every message, seen on the wire at banksim: a third bank's private field in refunds,
reversals and voids; angkor's wallet provider in a wallet payment's refund and reversal."""

from __future__ import annotations

import importlib

import pytest
import pytest_twisted
from structlog.testing import capture_logs

from connectors.base import _REGISTRY, parse_tlv, register
from switch.engine.engine import reversal_draft
from tests.e2e.harness import BANKS, PLUGIN_BANKS, PLUGIN_ROUTES, authorize, eventually, start_env, stop_env

VISA = "4111111111111111"
WALLET = "TRUEMONEY:0812345678"


@pytest.fixture(scope="module")
def third_bank():
    """The banks with bank_a on the third bank's plugin, registered only while these tests run (other
    tests list the registered plugins)."""
    plugin = importlib.import_module("tests.connectors.mekong_plugin")
    register(plugin.NAME)(plugin.Mekong)  # again, if an earlier run of this fixture took it out
    yield {**BANKS, "bank_a": {**BANKS["bank_a"], "plugin": plugin.NAME}}
    _REGISTRY.pop(plugin.NAME)


@pytest_twisted.async_yield_fixture
async def env(tmp_path, third_bank):
    e = await start_env(tmp_path, request_timeout=0.5, banks=third_bank)
    yield e
    await stop_env(e)


@pytest_twisted.async_yield_fixture
async def demo(tmp_path):
    e = await start_env(tmp_path, request_timeout=0.5, banks=PLUGIN_BANKS, routes=PLUGIN_ROUTES)
    yield e
    await stop_env(e)


def _at_bank(logged, mti, processing=None):
    """Requests banksim decoded from the wire (its ``banksim_in`` lines)."""
    return [e["fields"] for e in logged if e["event"] == "banksim_in" and e["mti"] == mti
            and (processing is None or e["fields"].get("3", "").startswith(processing))]


@pytest_twisted.ensureDeferred
async def test_the_third_banks_private_field_is_on_the_wire_in_refunds_reversals_and_voids(env):
    bank = env.sims["bank_a"]
    before = bank.balance(VISA)
    c = await env.connect()
    with capture_logs() as logged:
        sale = await c.call(authorize(1, amount=3000))
        refund = await c.call({"id": 2, "op": "refund", "txn_id": sale["txn_id"], "amount": 1000})
        voided = await c.call(authorize(3))
        void = await c.call({"id": 4, "op": "void", "txn_id": voided["txn_id"]})
        bank.set_faults(drop_ratio=1.0)  # debited, answer lost: reversed through store-and-forward
        lost = await c.call(authorize(5))
        bank.set_faults(drop_ratio=0.0)
        await eventually(lambda: bank.balance(VISA) == before - 2000)
    assert (refund["status"], void["status"], lost["status"]) == ("partially_refunded", "reversed", "timeout")
    [sale_sent] = [f for f in _at_bank(logged, "0200", "00") if f["11"] == sale["stan"]]
    assert "63" not in sale_sent  # the plugin changes refunds and reversals only
    [refund_sent] = _at_bank(logged, "0200", "20")
    assert parse_tlv(refund_sent["63"]) == {"OS": sale["stan"], "MT": "REFUND"}
    reversals = _at_bank(logged, "0400") + _at_bank(logged, "0401")
    assert {parse_tlv(f["63"])["OS"] for f in reversals} == {voided["stan"], lost["stan"]}
    assert {parse_tlv(f["63"])["MT"] for f in reversals} == {"REVERSAL"}


@pytest_twisted.ensureDeferred
async def test_angkor_names_the_wallet_provider_in_a_wallet_refund_and_reversal(demo):
    bank = demo.sims["bank_a"]
    before = bank.balance(WALLET)
    c = await demo.connect()
    wallet = {"type": "wallet", "provider": "TRUEMONEY", "wallet_id": "0812345678"}
    with capture_logs() as logged:
        sale = await c.call(authorize(1, amount=3000, instrument=wallet))
        refund = await c.call({"id": 2, "op": "refund", "txn_id": sale["txn_id"], "amount": 1000})
        bank.set_faults(drop_ratio=1.0)
        lost = await c.call(authorize(3, instrument=wallet))
        # After a crash the reversal is rebuilt from the journal: its template keeps what angkor needs.
        angkor = demo.switch.banks["bank_a"]
        draft = await reversal_draft(demo.journal, await demo.journal.get_transaction(lost["txn_id"]), angkor)
        bank.set_faults(drop_ratio=0.0)
        await eventually(lambda: bank.balance(WALLET) == before - 2000)
    assert (sale["status"], refund["status"], lost["status"]) == ("approved", "partially_refunded", "timeout")
    [refund_sent] = _at_bank(logged, "0200", "20")
    reversals = _at_bank(logged, "0420") + _at_bank(logged, "0421")
    assert reversals and all(parse_tlv(f["63"]) == {"WP": "TRUEMONEY"} for f in [refund_sent, *reversals])
    assert draft.fields["63"] == "WP009TRUEMONEY" and "0812345678" not in str(draft.fields)
    rebuilt = angkor.plugin.reversal_message({"t": "0420"}, {**draft.fields, "2": draft.card.pan})
    assert parse_tlv(rebuilt["63"]) == {"WP": "TRUEMONEY"}


@pytest_twisted.ensureDeferred
async def test_the_third_banks_sign_on_and_sign_off_go_through_its_plugin(tmp_path, third_bank):
    with capture_logs() as logged:
        env = await start_env(tmp_path, banks=third_bank)
        await stop_env(env)
    network = _at_bank(logged, "0800")
    assert {f["70"] for f in network} >= {"001", "002"}  # sign-on and sign-off
    assert all(parse_tlv(f["63"]) == {"AQ": "400001", "MT": "NETWORK"} for f in network)
    plain = _at_bank(logged, "1804")  # bank_b has no plugin
    assert plain and all("63" not in f for f in plain)
