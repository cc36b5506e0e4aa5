"""The transaction engine believes a bank's answer only as its connector plugin reads it:
an answer the plugin marks uncertain is answered as read and reversed like a timeout, and
an approved amount the plugin reads (a partial approval) is what the web tier gets."""

from __future__ import annotations

from typing import ClassVar

import pytest_twisted

import connectors.base
from connectors.base import ConnectorPlugin
from switch.domain.status import Status
from switch.iso.dialect import Message
from switch.iso.responses import BankAnswer, ResponseTable
from switch.journal.models import SafKind
from tests.e2e.harness import BANKS, authorize, eventually, start_env, stop_env

VISA = "4111111111111111"


class EngineProbe(ConnectorPlugin):
    """Reads approved requests (x100/x200) of amounts ending in 1 as uncertain, and approves half of
    those ending in 2; records every answer it reads."""

    name: ClassVar[str] = "engine_probe"
    seen: ClassVar[list[str]] = []

    def read_response(self, request: Message, response: Message, table: ResponseTable) -> BankAnswer:
        answer = super().read_response(request, response, table)
        self.seen.append(response["t"])
        if answer.status != "approved" or request["t"][2] != "0":
            return answer
        amount = int(request.get("4", "0"))
        if amount % 10 == 1:  # as an answer check reads an approval echoing another amount
            return BankAnswer(**{**vars(answer), "status": "failed", "reason": "format_error", "uncertain": True})
        if amount % 10 == 2:
            return BankAnswer(**{**vars(answer), "amount": amount // 2})
        return answer


@pytest_twisted.async_yield_fixture
async def probed(tmp_path, monkeypatch):
    monkeypatch.setitem(connectors.base._REGISTRY, EngineProbe.name, EngineProbe)  # registered for this test only
    banks = {**BANKS, "bank_a": {**BANKS["bank_a"], "plugin": "engine_probe"}}
    e = await start_env(tmp_path, request_timeout=0.5, banks=banks)
    yield e
    await stop_env(e)


@pytest_twisted.ensureDeferred
async def test_an_answer_the_plugin_does_not_believe_is_reversed(probed):
    bank = probed.sims["bank_a"]
    before = bank.balance(VISA)
    c = await probed.connect()
    a = await c.call(authorize(1, amount=1001))
    assert (a["status"], a["reason"]) == ("failed", "format_error")  # and the reversal makes that true:
    assert [i.kind for i in await probed.journal.saf_items(a["txn_id"])] == [SafKind.REVERSAL]

    await eventually(lambda: bank.balance(VISA) == before)
    assert (await probed.journal.get_transaction(a["txn_id"])).status is Status.FAILED


@pytest_twisted.ensureDeferred
async def test_a_partial_approval_read_by_the_plugin_reaches_the_web_tier(probed):
    c = await probed.connect()
    a = await c.call(authorize(1, amount=1002, capture=False))
    assert (a["status"], a["amount"], a["amount_authorized"]) == ("approved", 1002, 501)
    over = await c.call({"id": 2, "op": "capture", "txn_id": a["txn_id"], "amount": 502})
    assert (over["error"]["code"], over["error"]["field"]) == ("invalid_request", "amount")
    cap = await c.call({"id": 3, "op": "capture", "txn_id": a["txn_id"]})
    assert (cap["status"], cap["amount_captured"]) == ("captured", 501)
    assert "0230" in EngineProbe.seen  # the capture's answer was read by the plugin too
