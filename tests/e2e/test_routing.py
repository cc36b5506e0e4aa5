"""Routing through real sockets: fallback only while nothing was written, no_route, busy."""

from __future__ import annotations

import pytest_twisted

from tests.e2e.harness import authorize, eventually, start_env, stop_env

FALLBACK_ROUTES = """
[[routes]]
name = "visa-with-fallback"
bin_prefixes = ["4"]
connectors = ["bank_a", "bank_b"]

[[routes]]
name = "acme-range"
bin_prefixes = ["41111111"]
connectors = ["bank_b"]
"""


@pytest_twisted.async_yield_fixture
async def routed(tmp_path):
    # 1.5 s: well above the 0.3 s a test's slow bank takes, even on a loaded machine
    e = await start_env(tmp_path, request_timeout=1.5, routes=FALLBACK_ROUTES, connector_extra="max_in_flight = 2")
    yield e
    await stop_env(e)


@pytest_twisted.ensureDeferred
async def test_longest_bin_prefix_wins(routed):
    c = await routed.connect()
    assert (await c.call(authorize(1)))["connector"] == "bank_b"  # 41111111 is carved out for bank_b
    other_visa = authorize(2, pan="4000000000000002")
    assert (await c.call(other_visa))["connector"] == "bank_a"


@pytest_twisted.ensureDeferred
async def test_falls_back_when_first_connector_has_no_ready_link(routed):
    await routed.sims["bank_a"].close()
    await eventually(lambda: not routed.switch.banks["bank_a"].ready)
    c = await routed.connect()
    a = await c.call(authorize(1, pan="4000000000009995"))
    assert (a["connector"], a["status"], a["response_code"]) == ("bank_b", "declined", "116")


@pytest_twisted.ensureDeferred
async def test_no_fallback_after_the_request_was_written(routed):
    routed.sims["bank_a"].set_faults(drop_ratio=1.0)
    c = await routed.connect()
    a = await c.call(authorize(1, pan="4000000000000002"))
    assert (a["connector"], a["status"]) == ("bank_a", "timeout")
    assert routed.sims["bank_b"].received["1200"] == 0


@pytest_twisted.ensureDeferred
async def test_unroutable_is_failed_no_route_at_once(routed):
    c = await routed.connect()
    a = await c.call(authorize(1, pan="378282246310005"))
    assert (a["ok"], a["status"], a["reason"]) == (True, "failed", "no_route")


@pytest_twisted.ensureDeferred
async def test_connector_in_flight_limit_answers_busy(routed):
    routed.sims["bank_b"].set_faults(delay=0.3)
    c = await routed.connect()
    for i in range(3):
        c.send(authorize(i))
    answers = {a["id"]: a for a in [await c.answers.get() for _ in range(3)]}
    assert answers[2]["ok"] is False and answers[2]["error"]["code"] == "busy"
    assert answers[0]["status"] == answers[1]["status"] == "approved"
