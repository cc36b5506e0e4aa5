"""Metrics in the registry and the structured events an operator reads."""

from __future__ import annotations

import pytest_twisted
from twisted.internet.task import Clock

from switch.bank.connector import LinkState
from tests.bank.isohost import eventually
from tests.bank.support import events, sale, sample

LINK = {"connector": "bank", "link": "link1"}


@pytest_twisted.ensureDeferred
async def test_link_and_mux_metrics_are_in_the_registry(harness, registry):
    host = harness.host()
    connector = harness.connector(host.port, link={"sign_on": True})
    await connector.when_ready()
    await connector.request(sale())
    assert sample(registry, "kswitch_link_up", **LINK) == 1
    assert sample(registry, "kswitch_link_state", **LINK, state="ready") == 1
    assert sum(sample(registry, "kswitch_link_state", **LINK, state=s.value) for s in LinkState) == 1
    assert sample(registry, "kswitch_link_messages_total", **LINK, direction="out", mti="0800") == 1
    assert sample(registry, "kswitch_link_messages_total", **LINK, direction="in", mti="0810") == 1
    assert sample(registry, "kswitch_link_messages_total", **LINK, direction="out", mti="0200") == 1
    assert sample(registry, "kswitch_link_messages_total", **LINK, direction="in", mti="0210") == 1
    assert sample(registry, "kswitch_bank_response_seconds_count", connector="bank") == 1, "sign-on is not a bank response time"
    assert sample(registry, "kswitch_mux_requests_total", connector="bank", outcome="answered") == 1
    assert sample(registry, "kswitch_mux_pending", connector="bank") == 0
    for name in ("reconnects", "tls_failures", "echo_failures", "bad_frames"):
        assert registry.get_sample_value(f"kswitch_link_{name}_total", LINK) == 0
    for name in ("unmatched_responses", "late_responses"):
        assert registry.get_sample_value(f"kswitch_mux_{name}_total", {"connector": "bank"}) == 0
    await connector.stop()
    assert sample(registry, "kswitch_link_up", **LINK) == 0
    assert sample(registry, "kswitch_link_state", **LINK, state="stopped") == 1


@pytest_twisted.ensureDeferred
async def test_pending_gauge_follows_requests(harness, registry):
    host = harness.host()
    host.handler = lambda m, p: None
    connector = harness.connector(host.port, clock=Clock())
    await connector.when_ready()
    for i in range(3):
        connector.request(sale(terminal=f"TERM000{i}")).addErrback(lambda f: None)
    assert sample(registry, "kswitch_mux_pending", connector="bank") == 3


@pytest_twisted.ensureDeferred
async def test_life_cycle_events(harness, logs):
    host = harness.host()
    connector = harness.connector(host.port, link={"sign_on": True})
    await connector.when_ready()
    host.drop_connections()
    await eventually(lambda: events(logs, "link_disconnected"))
    names = [e["event"] for e in logs]
    for name in ("link_connecting", "link_connected", "link_sign_on_sent", "link_signed_on", "link_state",
                 "iso_out", "iso_in", "link_disconnected", "link_reconnect_scheduled"):
        assert name in names, name
    assert all(e["connector"] == "bank" and e["link"] == "link1" for e in logs if e["event"].startswith("link_"))
    assert events(logs, "link_disconnected")[0]["log_level"] == "warning"
