"""Merchant references through the whole switch (real sockets, real journal, banksim with both
demo banks): ordinary order ids and idempotency keys never fail whatever their digits, a
reference that plausibly is a card number is refused at validation, and nothing is journalled
for a refused request (issue 9, findings 1 and 2)."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.e2e.harness import PLUGIN_BANKS, PLUGIN_ROUTES, authorize, start_env, stop_env
from tests.gateway.conftest import error_of

VISA, MASTERCARD = "4111111111111111", "5555555555554444"
# Each passes the Luhn check, so the journal's old guard refused them and the web tier got `internal`.
ORDINARY = ["1234567890123452", "1732871234560", "order-1732871234560", "2026112900000018", "20261129-0000-0018"]


@pytest_twisted.async_yield_fixture
async def env(tmp_path):
    e = await start_env(tmp_path, banks=PLUGIN_BANKS, routes=PLUGIN_ROUTES)
    yield e
    await stop_env(e)


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_order_ids_and_keys_that_pass_luhn_are_ordinary_references(env):
    client = await env.connect()
    for number, reference in enumerate(ORDINARY):
        for pan in (VISA, MASTERCARD):  # bank_b (Sakura) also carries the order id in field 48
            request = authorize(f"{number}-{pan[0]}", pan=pan, order_id=f"{reference}-{pan[0]}",
                                idempotency_key=f"{reference}-{pan[0]}")
            answer = await client.call(request)
            assert answer["ok"] and answer["status"] == "approved", answer
            assert answer["order_id"] == f"{reference}-{pan[0]}"
            replay = await client.call({**request, "id": "replay"})
            assert replay["ok"] and replay["txn_id"] == answer["txn_id"], replay
            stored = await env.journal.get_transaction(answer["txn_id"])
            assert (stored.order_id, stored.idempotency_key) == (f"{reference}-{pan[0]}",) * 2
            by_order = await client.call({"id": "s", "op": "status", "merchant_id": "M100",
                                          "order_id": f"{reference}-{pan[0]}"})
            assert by_order["ok"] and by_order["txn_id"] == answer["txn_id"], by_order


@pytest_twisted.ensureDeferred
async def test_bare_order_numbers_that_pass_luhn_are_stored_as_given(env):
    client = await env.connect()
    for number, reference in enumerate(ORDINARY):
        answer = await client.call(authorize(number, order_id=reference, idempotency_key=reference))
        assert answer["ok"] and answer["status"] == "approved" and answer["order_id"] == reference, answer


@pytest_twisted.ensureDeferred
async def test_status_of_an_unknown_txn_id_that_passes_luhn_is_not_found(env):
    client = await env.connect()
    for txn_id in ("4012888888881881", "1732871234560"):
        assert error_of(await client.call({"id": 1, "op": "status", "txn_id": txn_id})) == ("not_found", "txn_id")
    answer = await client.call({"id": 2, "op": "status", "merchant_id": "M100", "order_id": "4012 8888 8888 1881"})
    assert error_of(answer) == ("not_found", "order_id")
    assert "8888 8888" not in answer["error"]["message"]  # error messages never repeat a card number


@pytest.mark.parametrize(
    "field, value",
    [
        ("order_id", VISA),  # the payment's own PAN
        ("order_id", "order 4111-1111-1111-1111"),
        ("order_id", "5105105105105100"),  # another card: Mastercard prefix, length and Luhn
        ("order_id", "A-378282246310005"),
        ("idempotency_key", f"key-{VISA}"),
        ("idempotency_key", "4012888888881881"),
        ("order_id", " "),
        ("order_id", " A-1"),
        ("order_id", "A-1 "),
    ],
)
@pytest_twisted.ensureDeferred
async def test_references_that_look_like_card_numbers_or_have_edge_spaces_are_refused(env, field, value):
    client = await env.connect()
    balance = env.sims["bank_a"].balance(VISA)
    answer = await client.call(authorize(1, **{field: value}))
    assert error_of(answer) == ("invalid_request", field)
    assert VISA not in answer["error"]["message"]
    assert env.sims["bank_a"].balance(VISA) == balance
    order_id = value if field == "order_id" else "order-1"
    assert await env.journal.find_by_order("M100", order_id) == []
    assert (await client.call({"id": 2, "op": "ping"}))["ok"]
