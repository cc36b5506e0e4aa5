"""``kpay capture|void|refund`` and ``kpay status --order`` as separate processes against a running
switch and banksim, exactly as from a shell; banksim's ledger is the witness."""

from __future__ import annotations

import json

import pytest_twisted

from tests.e2e.harness import TOKEN, authorize
from tests.tools.test_kpay import kpay

VISA = "4111111111111111"


def shell(env, *args: str):
    return kpay("--connect", f"tcp:127.0.0.1:{env.api_port}", "--client", "web-1", *args, token=TOKEN)


@pytest_twisted.ensureDeferred
async def test_capture_refund_and_status_by_order_from_the_shell(env):
    bank = env.sims["bank_a"]
    before = bank.balance(VISA)
    c = await env.connect()
    preauth = await c.call(authorize(1, amount=5000, capture=False, order_id="kp-1"))
    assert preauth["status"] == "approved"

    code, out, err = await shell(env, "capture", preauth["txn_id"], "--amount", "4000")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "CAPTURED  50.00 USD" and "    CAPTURE APPROVED  40.00 USD" in lines
    assert bank.balance(VISA) == before - 4000

    code, out, err = await shell(env, "refund", preauth["txn_id"], "--amount", "1000", "--json")
    answer = json.loads(out)
    assert (code, answer["status"], answer["amount_refunded"]) == (0, "partially_refunded", 1000)
    assert answer["operation"]["kind"] == "refund" and bank.balance(VISA) == before - 3000

    code, out, err = await shell(env, "status", "--order", "kp-1", "--merchant", "M100")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "PARTIALLY_REFUNDED  50.00 USD" and preauth["txn_id"] in out

    code, out, err = await shell(env, "refund", preauth["txn_id"], "--amount", "3001")
    assert (code, out) == (3, "") and err.startswith("kpay: invalid_request (amount): ")
    code, out, err = await shell(env, "status", "--order", "kp-none", "--merchant", "M100")
    assert (code, out) == (3, "") and err.startswith("kpay: not_found (order_id): ")


@pytest_twisted.ensureDeferred
async def test_void_from_the_shell_and_its_mistakes(env):
    bank = env.sims["bank_a"]
    before = bank.balance(VISA)
    c = await env.connect()
    sale = await c.call(authorize(1, order_id="kp-2"))
    assert bank.balance(VISA) == before - 1250

    code, out, err = await shell(env, "void", sale["txn_id"])
    assert (code, err) == (0, "") and out.splitlines()[0] == "REVERSED  12.50 USD"
    assert bank.balance(VISA) == before
    again = await shell(env, "void", sale["txn_id"])
    assert again[0] == 3 and again[2].startswith("kpay: invalid_state (txn_id): ") and len(again[2].splitlines()) == 1

    usage = [
        await shell(env, "status"),
        await shell(env, "status", sale["txn_id"], "--order", "kp-2", "--merchant", "M100"),
        await shell(env, "status", "--order", "kp-2"),
        await shell(env, "capture", sale["txn_id"], "--amount", "0"),
        await shell(env, "void", sale["txn_id"], "--amount", "10"),
    ]
    assert [code for code, _, _ in usage] == [2] * 5
    assert usage[0][2] == "kpay: status takes a TXN_ID, or --order ORDER_ID with --merchant MERCHANT_ID\n"
    assert all("Traceback" not in err for _, _, err in usage)
