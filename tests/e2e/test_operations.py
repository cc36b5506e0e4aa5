"""What operations staff see: /metrics, /readyz, graceful shutdown."""

from __future__ import annotations

import json

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import authorize, eventually, http_get


@pytest_twisted.ensureDeferred
async def test_metrics_parse_and_carry_api_and_link_metrics(env):
    c = await env.connect()
    await c.call(authorize(1))
    await c.call({"id": 2, "op": "nonsense"})
    code, body = await http_get(env.admin_port, "/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("kswitch_api_requests_total", (("op", "authorize"), ("status", "approved")))] == 1
    assert any(n == "kswitch_api_errors_total" and dict(l).get("code") == "unknown_op" for n, l in samples)
    assert samples[("kswitch_link_up", (("connector", "bank_a"), ("link", "bank_a-1")))] == 1
    assert any(n == "kswitch_bank_response_seconds_count" and dict(l)["connector"] == "bank_a" for n, l in samples)
    assert "kswitch_journal_commit_seconds" in families or any(k.startswith("kswitch_journal") for k in families)


@pytest_twisted.ensureDeferred
async def test_readyz_flips_when_a_bank_goes_away_and_back(env):
    code, body = await http_get(env.admin_port, "/readyz")
    assert code == 200 and json.loads(body)["ready"] is True
    await env.sims["bank_b"].close()
    await eventually(lambda: not env.switch.banks["bank_b"].ready)
    code, body = await http_get(env.admin_port, "/readyz")
    detail = json.loads(body)
    assert code == 503 and detail["unready_connectors"] == ["bank_b"] and detail["connectors"]["bank_a"]["bank_a-1"] == "ready"
    await env.restart_bank("bank_b")
    await eventually(lambda: env.switch.banks["bank_b"].ready)
    code, _ = await http_get(env.admin_port, "/healthz")
    assert code == 200
    code, _ = await http_get(env.admin_port, "/readyz")
    assert code == 200


@pytest_twisted.ensureDeferred
async def test_graceful_shutdown_answers_requests_in_flight(env):
    env.sims["bank_a"].set_faults(delay=0.5)
    c = await env.connect()
    c.send(authorize(1))
    await eventually(lambda: env.switch.banks["bank_a"].connector.mux.in_flight == 1)
    stopping = env.switch.stop()
    answer = await c.answers.get()
    assert answer["status"] == "approved"
    await stopping
    await c.closed
