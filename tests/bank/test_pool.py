"""Pools of links: failover under load, round-robin spread, echo failure leaving the rotation."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from switch.bank.connector import LinkLost, LinkState
from tests.bank.isohost import approve, eventually, sleep
from tests.bank.support import sale, sample


def answer_after(host, seconds):
    def handler(message, protocol):
        reactor.callLater(seconds, protocol.send, approve(host, message))

    return handler


def sent_on(registry, link):
    return sample(registry, "kswitch_link_messages_total", connector="bank", link=link, direction="out", mti="0200")


@pytest_twisted.ensureDeferred
async def test_failover_under_load_loses_nothing_and_sends_nothing_twice(harness, registry):
    primary, secondary = harness.host(), harness.host()
    for host in (primary, secondary):
        host.handler = answer_after(host, 0.02)
    clock = Clock()  # link timers only: the killed link stays down until the test lets it back
    connector = harness.connector(primary.port, secondary.port, clock=clock, link={"sign_on": True})
    await eventually(lambda: all(link.ready for link in connector.links))
    outcomes: dict[int, object] = {}

    def track(i, d):
        d.addCallbacks(lambda answer: outcomes.__setitem__(i, answer), lambda f: outcomes.__setitem__(i, f.value))

    total = 0
    for batch in range(20):
        for _ in range(10):
            track(total, connector.request(sale(terminal=f"T{total:07d}")))
            total += 1
        if batch == 7:
            primary.drop_connections()  # requests in flight on link1 are lost
        await sleep(0.01)
    await eventually(lambda: len(outcomes) == total, what="every request resolved")

    lost = [o for o in outcomes.values() if isinstance(o, LinkLost)]
    answered = [o for o in outcomes.values() if isinstance(o, dict)]
    assert len(lost) + len(answered) == total, "only answers and LinkLost, nothing else"
    assert lost and all(e.link == "link1" and e.written for e in lost)
    received = [m["11"] for m in primary.requests("0200") + secondary.requests("0200")]
    assert len(received) == len(set(received)), "no request reached the bank twice"
    assert {a["11"] for a in answered} <= set(received)
    every = {a["11"] for a in answered} | {e.stan for e in lost}
    assert len(every) == total, "one STAN per request"
    assert every - set(received) <= {e.stan for e in lost}, "only lost requests may have died in the socket"
    assert connector.links[0].state is LinkState.DOWN
    tail = [m["41"] for m in secondary.requests("0200")]
    assert f"T{total - 1:07d}" in tail, "later traffic runs on the survivor"

    clock.advance(0.5)  # the killed link reconnects, signs on and rejoins
    await eventually(lambda: connector.links[0].ready, what="link1 back")
    assert [m["70"] for m in primary.requests("0800")] == ["001", "001"]
    before = len(primary.requests("0200"))
    assert (await connector.request(sale(terminal="TBACK001")))["39"] == "00"
    assert len(primary.requests("0200")) == before + 1, "primary-secondary prefers the first link again"


@pytest_twisted.ensureDeferred
async def test_round_robin_spreads_requests(harness, registry):
    host = harness.host()
    connector = harness.connector(host.port, host.port, host.port, pool_strategy="round-robin")
    await eventually(lambda: all(link.ready for link in connector.links))
    for i in range(30):
        await connector.request(sale(terminal=f"T{i:07d}"))
    assert [sent_on(registry, f"link{i}") for i in (1, 2, 3)] == [10, 10, 10]
    assert len(host.connections) == 3


@pytest_twisted.ensureDeferred
async def test_a_link_failing_its_echoes_leaves_the_rotation(harness, registry):
    deaf, healthy = harness.host(), harness.host()
    deaf.handler = lambda m, p: None if m.get("70") == "301" else approve(deaf, m)
    clock = Clock()
    connector = harness.connector(deaf.port, healthy.port, clock=clock, link={"echo_max_failures": 2})
    await eventually(lambda: all(link.ready for link in connector.links))
    clock.advance(30)  # both links echo; only link2 answers
    await eventually(lambda: deaf.requests("0800"))
    clock.advance(10)
    clock.advance(0)
    await eventually(lambda: len(deaf.requests("0800")) == 2)
    clock.advance(10)
    await eventually(lambda: not connector.links[0].ready, what="link1 out of rotation")
    assert connector.links[1].ready
    await connector.request(sale())
    assert sent_on(registry, "link2") == 1 and sent_on(registry, "link1") == 0
