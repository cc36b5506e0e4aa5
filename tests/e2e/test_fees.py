"""Fees end to end: the demo fee plans on both banks, through the socket API, the journal and a restart."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor

from switch.app import Switch
from switch.ops.config import load_config
from tests.e2e.harness import Env, authorize, start_env, stop_env

VISA, MC = "4111111111111111", "5555555555554444"
DEMO_FEES = """
[[fees.banks]]
bank = "bank_a"
basis_points = 50
per_currency = [{ currency = "USD", minimum = "0.10" }]
on_refund = "reverse"

[[fees.banks]]
bank = "bank_b"
basis_points = 40
per_currency = [{ currency = "USD", fixed = "0.05" }]
on_refund = "reverse"

[[fees.merchants]]
merchant = "M100"
basis_points = 250
on_refund = "reverse"
"""

EXPECTED = {
    # order: {txn kind: (bank_fee, merchant_fee)} per row, worked out by hand from the demo plans
    "sale-a": [("sale", 50, 250)],                           # 100.00 on bank_a: 0.50 %, 2.50 %
    "refund-a": [("sale", 10, 25), ("refund", -4, -10)],      # 10.00: 0.05 raised to the 0.10 minimum; refund 4/10
    "preauth-b": [("authorization", 0, 0), ("capture", 17, 75)],  # capture 30.01: 12.004 -> 12 + 5; 75.025 -> 75
    "bare-a": [("authorization", 0, 0)],                      # a pre-authorization alone moves no money
    "void-b": [("sale", 13, 50), ("void", -13, -50)],         # 20.00: 8 + 5, 50; the void reverses all of it
}


async def _journal_rows(env: Env, txn_id: str) -> list[tuple[str, int, int]]:
    payment, operations = await env.journal.with_operations(txn_id)
    return [(t.kind.value, t.bank_fee, t.merchant_fee) for t in [payment, *operations]]


async def _statuses(env: Env, ids: dict[str, str]) -> dict[str, dict[str, Any]]:
    c = await env.connect()
    return {name: await c.call({"id": name, "op": "status", "txn_id": txn_id}) for name, txn_id in ids.items()}


def _check_status(name: str, status: dict[str, Any]) -> None:
    rows = EXPECTED[name]
    assert status["ok"], status
    assert (status["bank_fee"], status["merchant_fee"]) == rows[0][1:], (name, status)
    assert [(o["kind"], o["bank_fee"], o["merchant_fee"]) for o in status["operations"]] == rows[1:], (name, status)
    assert status["fees"] == {"bank_fee": sum(r[1] for r in rows), "merchant_fee": sum(r[2] for r in rows)}


@pytest_twisted.ensureDeferred
async def test_demo_fee_plans_are_journalled_with_each_movement_and_survive_a_restart(tmp_path):
    env = await start_env(tmp_path, extra_config=DEMO_FEES)
    try:
        c = await env.connect()
        ids: dict[str, str] = {}
        sale = await c.call(authorize(1, amount=10_000))
        assert (sale["status"], sale["connector"], sale["bank_fee"], sale["merchant_fee"]) == ("approved", "bank_a", 50, 250)
        ids["sale-a"] = sale["txn_id"]

        small = await c.call(authorize(2, amount=1_000))
        refund = await c.call({"id": 3, "op": "refund", "txn_id": small["txn_id"], "amount": 400})
        assert refund["status"] == "partially_refunded", refund
        assert (refund["operation"]["bank_fee"], refund["operation"]["merchant_fee"]) == (-4, -10)
        ids["refund-a"] = small["txn_id"]

        auth = await c.call(authorize(4, pan=MC, amount=5_000, capture=False))
        assert (auth["connector"], auth["bank_fee"], auth["merchant_fee"]) == ("bank_b", 0, 0)
        cap = await c.call({"id": 5, "op": "capture", "txn_id": auth["txn_id"], "amount": 3_001})
        assert cap["status"] == "captured", cap
        ids["preauth-b"] = auth["txn_id"]

        bare = await c.call(authorize(6, amount=700, capture=False))
        assert bare["status"] == "approved"
        ids["bare-a"] = bare["txn_id"]

        sale_b = await c.call(authorize(7, pan=MC, amount=2_000))
        void = await c.call({"id": 8, "op": "void", "txn_id": sale_b["txn_id"]})
        assert void["status"] == "reversed", void
        ids["void-b"] = sale_b["txn_id"]

        for name, txn_id in ids.items():
            assert await _journal_rows(env, txn_id) == EXPECTED[name], name
        for name, status in (await _statuses(env, ids)).items():
            _check_status(name, status)

        await env.switch.stop()
        env.clients.clear()
        env.switch = Switch(load_config(tmp_path / "kswitch.toml"), reactor, CollectorRegistry())
        await env.switch.start()
        for name, txn_id in ids.items():
            assert await _journal_rows(env, txn_id) == EXPECTED[name], name
        for name, status in (await _statuses(env, ids)).items():
            _check_status(name, status)
    finally:
        await stop_env(env)
