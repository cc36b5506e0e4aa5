"""Every way a request can fail gives its STAN back: the connector's STAN pool returns to empty.

A STAN the mux keeps forever is one fewer for the bank's duplicate check to tell apart,
and a leak per failure drains the 999 999 numbers of a busy connector within days.
"""

from __future__ import annotations

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from switch.bank.connector import LinkLost, MuxBusy, NoLinkAvailable, RequestTimeout
from switch.bank.linkparts import LinkNotConnected
from switch.bank.mux import Mux
from switch.bank.numbering import StanAllocator
from switch.bank.pool import LinkPool
from switch.iso.dialect import MessageError
from tests.bank.isohost import approve, eventually
from tests.bank.support import ISO87, sale

LATE_WINDOW = 120.0


async def failure_of(deferred):
    try:
        result = await deferred
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return e
    raise AssertionError(f"expected a failure, got {result!r}")


def silent(host):
    def handler(message, protocol):
        return None if message["t"] == "0200" else approve(host, message)

    return handler


async def ready_connector(harness, host, clock, **options):
    connector = harness.connector(host.port, clock=clock, request_timeout=10.0, link={"echo_interval": 0},
                                  late_response_window=LATE_WINDOW, **options)
    await connector.when_ready()
    return connector


@pytest_twisted.ensureDeferred
async def test_timed_out_stan_comes_back_after_the_late_window_without_other_traffic(harness):
    host = harness.host()
    host.handler = silent(host)
    clock = Clock()
    connector = await ready_connector(harness, host, clock)
    stan = connector.reserve_stan()
    pending = connector.request({**sale(), "11": stan})
    await eventually(lambda: host.requests("0200"))
    clock.advance(10.0)
    assert isinstance(await failure_of(pending), RequestTimeout)
    clock.advance(LATE_WINDOW - 1)
    assert stan in connector.mux.stans, "a late answer must not meet a new request with the same STAN"
    clock.advance(1)
    assert len(connector.mux.stans) == 0


@pytest_twisted.ensureDeferred
async def test_link_lost_stans_come_back_after_the_late_window(harness):
    host = harness.host()
    host.handler = silent(host)
    clock = Clock()
    connector = await ready_connector(harness, host, clock)
    pending = [connector.request({**sale(terminal=f"TERM000{i}"), "11": connector.reserve_stan()}) for i in range(3)]
    await eventually(lambda: len(host.requests("0200")) == 3)
    host.drop_connections()
    for d in pending:
        assert isinstance(await failure_of(d), LinkLost)
    assert len(connector.mux.stans) == 3
    clock.advance(LATE_WINDOW)
    assert len(connector.mux.stans) == 0


@pytest_twisted.ensureDeferred
async def test_reserved_stan_is_released_when_no_link_is_ready(harness):
    host = harness.host()
    port = host.port
    await host.stop()
    connector = harness.connector(port, clock=Clock())
    stan = connector.reserve_stan()
    error = await failure_of(connector.request({**sale(), "11": stan}))
    assert isinstance(error, NoLinkAvailable) and error.stan == stan and not error.written
    assert len(connector.mux.stans) == 0


@pytest_twisted.ensureDeferred
async def test_reserved_stan_is_released_when_the_connector_is_busy(harness):
    host = harness.host()
    host.handler = silent(host)
    clock = Clock()
    connector = await ready_connector(harness, host, clock, max_in_flight=1)
    first = connector.request(sale())
    await eventually(lambda: host.requests("0200"))
    stan = connector.reserve_stan()
    assert isinstance(await failure_of(connector.request({**sale(terminal="TERM0002"), "11": stan})), MuxBusy)
    assert stan not in connector.mux.stans
    clock.advance(10.0)
    assert isinstance(await failure_of(first), RequestTimeout)
    clock.advance(LATE_WINDOW)
    assert len(connector.mux.stans) == 0


@pytest_twisted.ensureDeferred
async def test_reserved_stan_is_released_when_the_message_cannot_be_encoded(harness):
    host = harness.host()
    connector = await ready_connector(harness, host, Clock())
    stan = connector.reserve_stan()
    error = await failure_of(connector.request({**sale(), "11": stan, "4": "12x"}))
    assert isinstance(error, MessageError)
    assert host.requests("0200") == []
    assert len(connector.mux.stans) == 0


@pytest_twisted.ensureDeferred
async def test_reserved_stan_is_released_when_the_connector_is_stopping(harness):
    host = harness.host()
    connector = await ready_connector(harness, host, Clock())
    stan = connector.reserve_stan()
    await connector.stop()
    assert isinstance(await failure_of(connector.request({**sale(), "11": stan})), NoLinkAvailable)
    assert len(connector.mux.stans) == 0


@pytest_twisted.ensureDeferred
async def test_releasing_after_a_failed_request_does_not_free_another_callers_stan(harness):
    """A caller that still releases after `request` failed (the old contract) is harmless."""
    host = harness.host()
    port = host.port
    await host.stop()
    connector = harness.connector(port, clock=Clock())
    stan = connector.reserve_stan()
    await failure_of(connector.request({**sale(), "11": stan}))
    held = connector.reserve_stan()
    connector.release_stan(stan)
    assert held in connector.mux.stans
    connector.release_stan(held)
    assert len(connector.mux.stans) == 0


class FakeLink:
    """A link whose next write succeeds, is refused (not connected) or cannot be encoded."""

    name = "fake"

    def __init__(self) -> None:
        self.ready = True
        self.next = "ok"
        self.sent: list[dict[str, str]] = []

    def send(self, message, encoded=None):
        if self.next == "down":
            raise LinkNotConnected("link fake is down")
        if self.next == "bad":
            raise MessageError("Failed to encode field 4")
        self.sent.append(message)


OUTCOMES = ("answer", "timeout", "link_lost", "cancel", "down", "bad", "busy", "unused")


def test_every_mix_of_outcomes_leaves_no_stan_in_use():
    """Property: whatever happens to each reserved STAN (answered, timed out, link lost, cancelled,
    refused unwritten, unencodable, busy, never sent), once the late window has passed none is held."""

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(OUTCOMES), st.floats(min_value=0, max_value=40)), max_size=40))
    def check(steps):
        clock = Clock()
        link = FakeLink()
        mux = Mux("bank", ISO87, LinkPool([link]), clock, stans=StanAllocator(), request_timeout=10.0,
                  max_in_flight=5, late_window=LATE_WINDOW, registry=CollectorRegistry())
        for i, (outcome, wait) in enumerate(steps):
            stan = mux.reserve_stan()
            if outcome == "unused":
                mux.release_stan(stan)
                continue
            link.next = outcome if outcome in ("down", "bad") else "ok"
            d = mux.request({**sale(terminal=f"T{i:07d}"), "11": stan})
            d.addErrback(lambda f: None)
            if outcome == "answer" and link.sent and link.sent[-1]["11"] == stan:
                mux.response_received(link, {**link.sent[-1], "t": "0210", "39": "00"})
            elif outcome == "link_lost":
                mux.link_lost(link, "peer closed")
            elif outcome == "cancel":
                d.cancel()
            clock.advance(wait)
        clock.advance(10.0)  # every pending request times out
        clock.advance(LATE_WINDOW)
        assert mux.in_flight == 0
        assert len(mux.stans) == 0

    check()
