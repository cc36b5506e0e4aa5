"""One node per journal (the lease) and the persisted counters behind RRNs, on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock as ReactorClock

from switch.bank.numbering import RrnAllocator
from switch.journal import open_journal
from switch.journal.lease import LeaseHeld, LeaseHolder, LeaseLost, NodeLease, Taken


async def second_journal(config, registry, clock):
    return await open_journal(config, reactor, registry=registry, clock=clock)


def holder(owner: str, host: str = "host-a", pid: int | None = None) -> LeaseHolder:
    return LeaseHolder(owner=owner, host=host, pid=os.getpid() if pid is None else pid)


@pytest_twisted.ensureDeferred
async def test_a_second_node_is_refused_naming_the_holder(journal, config, registry, clock):
    await journal.acquire_lease(holder("first"), 15.0)
    other = await second_journal(config, registry, clock)
    try:
        with pytest.raises(LeaseHeld) as refused:
            await other.acquire_lease(holder("second", host="host-b"), 15.0)
        message = str(refused.value)
        assert "\n" not in message
        assert "node first (host host-a, pid" in message and "one kswitch per journal" in message
    finally:
        await other.close()


@pytest_twisted.ensureDeferred
async def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it_lost(journal, config, registry, clock):
    await journal.acquire_lease(holder("first", host="host-a"), 15.0)
    other = await second_journal(config, registry, clock)
    try:
        clock.advance(14.0)
        with pytest.raises(LeaseHeld):
            await other.acquire_lease(holder("second", host="host-b"), 15.0)
        clock.advance(1.5)  # no heartbeat for longer than the lease: the holder died or hung
        taken = await other.acquire_lease(holder("second", host="host-b"), 15.0)
        assert (taken.holder.owner, taken.previous.owner, taken.reason) == ("second", "first", "lease expired")
        with pytest.raises(Exception, match="lost the journal lease; it is now held by kswitch node second"):
            await journal.renew_lease("first", 15.0)
    finally:
        await other.close()


@pytest_twisted.ensureDeferred
async def test_heartbeats_keep_the_lease(journal, config, registry, clock):
    await journal.acquire_lease(holder("first"), 15.0)
    for _ in range(4):
        clock.advance(10.0)
        await journal.renew_lease("first", 15.0)
    other = await second_journal(config, registry, clock)
    try:
        with pytest.raises(LeaseHeld):
            await other.acquire_lease(holder("second", host="host-b"), 15.0)
    finally:
        await other.close()


@pytest_twisted.ensureDeferred
async def test_a_crashed_holder_on_this_host_is_taken_over_at_once(journal, config, registry, clock):
    """After SIGKILL the restarted switch need not wait for the expiry: the holder's pid is gone."""
    dead_pid = 2**22 + 12345  # above Linux's pid_max default: no such process
    await journal.acquire_lease(holder("crashed", host="this-host", pid=dead_pid), 15.0)
    other = await second_journal(config, registry, clock)
    try:
        taken = await other.acquire_lease(holder("restarted", host="this-host"), 15.0)
        assert (taken.holder.owner, taken.previous.owner, taken.reason) == ("restarted", "crashed", "holder process gone")
    finally:
        await other.close()


@pytest_twisted.ensureDeferred
async def test_a_clean_stop_releases_the_lease(journal, config, registry, clock):
    lease = NodeLease(journal, ReactorClock(), on_lost=lambda e: None, me=holder("first"))
    await lease.acquire()
    assert await lease.release() is True
    other = await second_journal(config, registry, clock)
    try:
        taken = await other.acquire_lease(holder("second", host="host-b"), 15.0)
        assert (taken.holder.owner, taken.previous) == ("second", None)
    finally:
        await other.close()


@pytest_twisted.ensureDeferred
async def test_node_lease_heartbeat_notices_a_takeover(journal, config, registry, clock):
    beats = ReactorClock()
    lost = []
    lease = NodeLease(journal, beats, on_lost=lost.append, me=holder("first", host="host-a"))
    await lease.acquire()
    clock.advance(16.0)  # the node stalled past its lease
    other = await second_journal(config, registry, clock)
    try:
        await other.acquire_lease(holder("second", host="host-b"), 15.0)
        beats.advance(5.0)
        await beat_done(lease)
        assert len(lost) == 1 and "now held by kswitch node second" in str(lost[0])
    finally:
        await other.close()


async def beat_done(lease: NodeLease) -> None:
    """The heartbeat's journal write runs on the writer thread: wait for it through the journal."""
    await lease.journal.renew_lease("nobody-waits", 1.0).addErrback(lambda f: None)


async def burst(rrns: RrnAllocator, journal, count: int) -> list[str]:
    """``count`` RRNs as fast as they go, letting the journal confirm each next block in between."""
    handed: list[str] = []
    while len(handed) < count:
        handed += [rrns.allocate() for _ in range(min(400, count - len(handed)))]
        await journal.reserve_numbers("flush", 1)  # FIFO writer: the refill asked for meanwhile is durable
    return handed


@pytest_twisted.ensureDeferred
async def test_rrns_stay_unique_across_a_restart_of_the_journal_at_a_high_rate(journal, config, registry, clock):
    """Thousands of RRNs in the same instant, the process gone without a clean stop, a new one on
    the same journal in the same millisecond: no RRN repeats (the old scheme repeated them all)."""
    frozen = clock()
    first = RrnAllocator(lambda: frozen, functools.partial(journal.reserve_numbers, "rrn:bank_a"), block=1000)
    await first.start()
    before = await burst(first, journal, 2500)
    restarted = await second_journal(config, registry, lambda: frozen)
    try:
        second = RrnAllocator(lambda: frozen, functools.partial(restarted.reserve_numbers, "rrn:bank_a"), block=1000)
        await second.start()
        after = await burst(second, restarted, 2500)
    finally:
        await restarted.close()
    assert len(set(before)) == len(before) and len(set(after)) == len(after)
    assert not set(before) & set(after)


class StalledJournal:
    """A journal whose database took the lease and then stops answering: each renewal is a Deferred the
    test fires (or never does), as a renewal stuck behind a partition or a stopped server is."""

    def __init__(self) -> None:
        self.renewals: list[Deferred] = []

    def acquire_lease(self, me: LeaseHolder, seconds: float) -> Deferred:
        return succeed(Taken(me))

    def renew_lease(self, owner: str, seconds: float) -> Deferred:
        self.renewals.append(Deferred())
        return self.renewals[-1]

    def release_lease(self, owner: str) -> Deferred:
        return succeed(True)

    def when_fenced(self, callback) -> None:
        pass


def stalled_lease() -> tuple[NodeLease, StalledJournal, ReactorClock, list]:
    clock, journal, lost = ReactorClock(), StalledJournal(), []
    lease = NodeLease(journal, clock, on_lost=lost.append, seconds=15.0, me=holder("first"))
    lease.acquire()
    return lease, journal, clock, lost


def test_a_node_whose_renewals_hang_steps_down_before_its_lease_can_expire():
    """A partition longer than the lease: the renewals never come back, so the heartbeat (which waits for
    each) cannot notice. The node steps down at two thirds of the lease, while the lease is still its own."""
    lease, journal, clock, lost = stalled_lease()
    clock.advance(5.0)
    assert len(journal.renewals) == 1  # sent, and stuck
    clock.advance(4.9)
    assert lost == []
    clock.advance(0.1)
    assert len(lost) == 1 and isinstance(lost[0], LeaseLost)
    assert "could not renew the journal lease for 10s of its 15s" in str(lost[0])
    clock.advance(60.0)
    assert len(lost) == 1 and len(journal.renewals) == 1  # the heartbeat stopped with it


def test_a_renewal_that_succeeds_moves_the_step_down_to_two_thirds_of_a_lease_after_it_was_sent():
    lease, journal, clock, lost = stalled_lease()
    clock.advance(5.0)
    clock.advance(3.0)
    journal.renewals[0].callback(None)  # sent at 5 s: the lease holds until 20 s, the deadline is 15 s
    clock.advance(5.0)  # 13 s: the next beat went at 10 s and is stuck
    journal.renewals[1].errback(ConnectionError("server closed the connection"))
    assert lost == []
    clock.advance(1.9)
    assert lost == []
    clock.advance(0.1)
    assert len(lost) == 1 and "could not renew the journal lease for 10s" in str(lost[0])


def test_a_late_answer_after_the_step_down_does_not_report_the_loss_twice():
    lease, journal, clock, lost = stalled_lease()
    clock.advance(10.0)
    journal.renewals[0].errback(LeaseLost("this node (first) lost the journal lease; it is now held by nobody"))
    journal.renewals.clear()
    assert len(lost) == 1 and "could not renew" in str(lost[0])


def test_a_released_lease_does_not_step_down_afterwards():
    lease, journal, clock, lost = stalled_lease()
    lease.release()
    clock.advance(60.0)
    assert lost == [] and journal.renewals == []
