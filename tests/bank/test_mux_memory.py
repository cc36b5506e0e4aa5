"""What a request waiting on its bank costs the mux: with 10,000 payments held at a slow bank, every byte of
its pending entry is 10 KB of the switch (README, "Memory per pending payment")."""

from __future__ import annotations

import tracemalloc

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from switch.bank.mux import Mux
from switch.bank.numbering import StanAllocator
from switch.bank.pool import LinkPool
from tests.bank.support import ISO87, sale

HELD = 20_000
BOUND = 182
"""Bytes a pending request may add to the mux: its entry (80), its deadline (24), its key (32), its share of the
pending table and of the deadline heap (about 38 over a table's doubling); 174 measured. An entry that keeps
the mux's own timeout and "routed" for every request (+16), a tuple key (+60) or a timer per request (+400)
goes past it."""


class QuietLink:
    """A bank that never answers: every request stays pending."""

    name = "quiet"
    ready = True

    def send(self, message, encoded=None):
        pass


class Waiter:
    """Who waits on every request (`switch.domain.answering.Answerable`): one, shared, so none is counted."""

    def callback(self, result):
        raise AssertionError("a request was answered")

    def errback(self, reason):
        raise AssertionError(f"a request failed: {reason}")


def test_a_request_waiting_on_its_bank_costs_the_mux_under_its_bound():
    mux = Mux("bank", ISO87, LinkPool([QuietLink()]), Clock(), stans=StanAllocator(), request_timeout=900.0,
              max_in_flight=HELD, registry=CollectorRegistry())
    waiter = Waiter()
    messages = [{**sale(), "11": mux.reserve_stan()} for _ in range(HELD)]  # the payment's own message and STAN
    traced = []
    tracemalloc.start()
    try:
        for i, message in enumerate(messages):
            if i in (HELD // 2, HELD - 1):
                traced.append(tracemalloc.get_traced_memory()[0])
            mux.request_to(waiter, message)
    finally:
        tracemalloc.stop()
    assert mux.in_flight == HELD
    per_request = (traced[1] - traced[0]) / (HELD // 2 - 1)  # the second half: the first made what is made once
    assert per_request <= BOUND, f"{per_request:.0f} B a pending request"
