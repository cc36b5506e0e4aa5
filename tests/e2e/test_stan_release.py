"""The payment core gives a reserved STAN back when its request never reaches the mux or the wire."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from switch.journal import JournalUnavailable, Kind
from tests.e2e.harness import authorize, start_env, stop_env

CAFE = """
[[clients]]
name = "cafe-web"
token = "cafe-token-0123456789"
merchants = ["M300"]

[[merchants]]
id = "M300"
name = "CAFÉ ÅNGSTRÖM"
city = "PHNOM PENH"
country = "KH"
mcc = "5814"
acquirer_merchant_id = "000000000300003"
stores = [{ id = "web", terminal_id = "WEB00003" }]
"""

def stans_in_use(env) -> int:
    return len(env.switch.banks["bank_a"].connector.mux.stans)

@pytest_twisted.async_yield_fixture
async def cafe(tmp_path):
    e = await start_env(tmp_path, extra_config=CAFE)
    yield e
    await stop_env(e)

@pytest_twisted.ensureDeferred
async def test_a_payment_that_cannot_be_encoded_gives_its_stan_back(cafe):
    payer = await cafe.connect(client="cafe-web", token="cafe-token-0123456789")
    answer = await payer.call(authorize(1, merchant_id="M300"))
    assert answer.get("status") != "approved"
    assert cafe.sims["bank_a"].received["0200"] == 0, "nothing reached the bank"
    assert stans_in_use(cafe) == 0

@pytest_twisted.ensureDeferred
async def test_a_capture_whose_journal_write_fails_gives_its_stan_back(env, monkeypatch):
    c = await env.connect()
    a = await c.call(authorize(1, amount=5000, capture=False))
    assert a["status"] == "approved"
    def failing(parent_txn_id, new, **kw):
        assert new.kind is Kind.CAPTURE
        return defer.fail(JournalUnavailable("database unreachable"))

    monkeypatch.setattr(env.journal, "begin_operation", failing)
    cap = await c.call({"id": 2, "op": "capture", "txn_id": a["txn_id"], "amount": 4000})
    assert not cap["ok"]
    assert env.sims["bank_a"].received["0220"] == 0
    assert stans_in_use(env) == 0
