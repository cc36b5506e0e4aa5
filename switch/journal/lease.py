"""One node per journal: the lease row a running kswitch holds on its database.

Several switch processes writing one journal would each run recovery on the others'
in-flight payments, hand out the same RRN blocks and reorder store-and-forward, so
until several nodes are supported a second process is refused at start-up.  The
lease is one row (owner id, host, pid, heartbeat, expiry) taken in a database
transaction at start-up and renewed by a heartbeat; a clean stop deletes it.

A lease is taken over when it has expired (its holder stopped renewing it: SIGKILL,
power cut, a hung host) or at once when its holder ran on this host and its process
is gone (so a switch restarted after a crash does not wait for the expiry).  Takeover
is a compare-and-set on the row, so of two processes starting together one wins.

A holder that cannot renew (its database unreachable or stalled: a partition) steps down
by itself once `RENEW_DEADLINE` of the lease has passed since the last renewal it sent,
before the lease can expire and a node on the other side of the partition take it over.
Without that it would learn only at its next successful heartbeat, after the partition,
and two nodes would have written one journal meanwhile.

Stepping down is a graceful stop, which takes seconds, and the writer commits whatever it is
handed meanwhile; so the database itself keeps a node that lost the lease from writing: once the
lease is taken, every writer batch first checks, in its own transaction, that the row is still this
node's (`fence`), and a batch that finds it taken is rolled back whole, each of its writes failing
with `LeaseLost`. The first such batch makes the node step down at once, as a heartbeat finding the
lease taken does.

Times are the journal clock's microseconds; hosts sharing a PostgreSQL journal need
clocks within a fraction of the lease time of each other.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall

from switch.journal.db import Db, Later, Row
from switch.journal.errors import JournalError, LeaseLost

log = structlog.get_logger("kswitch.journal")

LEASE = "journal"
LEASE_SECONDS = 15.0
"""How long a lease outlives its last heartbeat; heartbeats come every third of it."""

RENEW_DEADLINE = 2 / 3
"""The part of the lease after the last renewal a node sent by which the next must have succeeded, or the node
steps down: two heartbeats may fail, and a third of the lease is left for the hosts' clocks to differ."""

SHARED_OWNER = "lease_owner"
"""The key under which the journal hands its writer this node's owner id once it has taken the lease
(`switch.journal.units.shared`): from then on every batch the writer commits is fenced with it (`fence`)."""


@dataclass(frozen=True)
class LeaseHolder:
    owner: str
    host: str
    pid: int
    acquired_at: int = 0
    heartbeat_at: int = 0
    expires_at: int = 0

    @classmethod
    def this_process(cls) -> LeaseHolder:
        return cls(owner=uuid.uuid4().hex[:12], host=socket.gethostname(), pid=os.getpid())

    def describe(self, now: int) -> str:
        since, left = max(0, now - self.heartbeat_at) / 1e6, max(0, self.expires_at - now) / 1e6
        return (f"node {self.owner} (host {self.host}, pid {self.pid}, last heartbeat {since:.0f}s ago, "
                f"expires in {left:.0f}s)")


@dataclass(frozen=True)
class Taken:
    """The lease as taken: ``previous`` is the holder it was taken over from, and why."""

    holder: LeaseHolder
    previous: LeaseHolder | None = None
    reason: str | None = None


class LeaseHeld(JournalError):
    """Another live kswitch holds this journal's lease."""

    def __init__(self, holder: LeaseHolder, now: int) -> None:
        self.holder = holder
        super().__init__(
            f"the journal is in use by kswitch {holder.describe(now)}; one kswitch per journal: "
            "stop that one first (a crashed one is taken over once its lease expires)"
        )


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def acquire(db: Db, me: LeaseHolder, *, now: int, ttl: int, alive: Callable[[int], bool] = pid_alive) -> Taken:
    """Take the lease for ``me`` or raise `LeaseHeld` naming the live holder."""
    previous: LeaseHolder | None = None
    reason: str | None = None
    mine = {**_columns(me), "acquired_at": now, "heartbeat_at": now, "expires_at": now + ttl}
    row = db.one("SELECT * FROM node_lease WHERE name = :name", {"name": LEASE})
    if row is None:
        taken = db.execute(
            "INSERT INTO node_lease (name, owner, host, pid, acquired_at, heartbeat_at, expires_at) "
            "VALUES (:name, :owner, :host, :pid, :acquired_at, :heartbeat_at, :expires_at) "
            "ON CONFLICT (name) DO NOTHING",
            {"name": LEASE, **mine},
        )
    else:
        holder = _holder(row)
        crashed_here = holder.host == me.host and holder.pid != me.pid and not alive(holder.pid)
        if holder.owner != me.owner and holder.expires_at > now and not crashed_here:
            raise LeaseHeld(holder, now)
        if holder.owner != me.owner:
            previous, reason = holder, "holder process gone" if crashed_here else "lease expired"
        taken = db.execute(
            "UPDATE node_lease SET owner = :owner, host = :host, pid = :pid, acquired_at = :acquired_at, "
            "heartbeat_at = :heartbeat_at, expires_at = :expires_at "
            "WHERE name = :name AND owner = :old_owner AND heartbeat_at = :old_heartbeat",
            {"name": LEASE, **mine, "old_owner": holder.owner, "old_heartbeat": holder.heartbeat_at},
        )
    if taken != 1:  # another process took it between our read and our write
        winner = db.one("SELECT * FROM node_lease WHERE name = :name", {"name": LEASE})
        raise LeaseHeld(_holder(winner) if winner is not None else me, now)
    return Taken(LeaseHolder(**mine), previous, reason)


def renew(db: Db, owner: str, *, now: int, ttl: int) -> None:
    """Push the expiry out; `LeaseLost` if the row is no longer ours."""
    if db.execute(
        "UPDATE node_lease SET heartbeat_at = :now, expires_at = :expires WHERE name = :name AND owner = :owner",
        {"name": LEASE, "owner": owner, "now": now, "expires": now + ttl},
    ) != 1:
        raise _lost(owner, db.one("SELECT * FROM node_lease WHERE name = :name", {"name": LEASE}), now)


def release(db: Db, owner: str) -> bool:
    return db.execute("DELETE FROM node_lease WHERE name = :name AND owner = :owner",
                      {"name": LEASE, "owner": owner}) == 1


def fence(db: Db) -> Later[LeaseLost | None] | None:
    """A writer batch's lease check (`switch.journal.batch.Committer`), sent first in its transaction: it resolves
    to the `LeaseLost` the whole batch fails with if the lease row is gone or another node's, else to None. None
    (nothing sent) until the journal has shared this node's owner id (`SHARED_OWNER`): migrations and the
    acquiring itself run before there is a lease to check.

    Why in every batch: a node that lost the lease stops gracefully, and until its writer stops it would commit
    payments' outcomes, store-and-forward items and RRN blocks into a journal another node now runs. On
    PostgreSQL the row is read ``FOR SHARE`` (`Dialect.share_lock`): a takeover's UPDATE waits until the batch has
    committed, and a batch that reads after a takeover committed sees the new owner. On SQLite the batch's
    ``BEGIN IMMEDIATE`` holds every other writer off already. One indexed single-row read a batch: on PostgreSQL it
    rides the batch's pipeline (`Db.one_later`) and is read with the units' results, without a round trip of its own.
    """
    owner = db.shared.get(SHARED_OWNER)
    if owner is None:
        return None
    read = db.one_later(f"SELECT * FROM node_lease WHERE name = :name{db.dialect.share_lock}", {"name": LEASE})
    return Later(read, functools.partial(_fenced, owner))


def _fenced(owner: str, row: Row | None) -> LeaseLost | None:
    if row is not None and row["owner"] == owner:
        return None
    # The writer has no journal clock; the wall clock is the one the journal's is in a running switch.
    return _lost(owner, row, int(time.time() * 1_000_000), "; nothing of this write was committed")


def _lost(owner: str, row: Row | None, now: int, then: str = "") -> LeaseLost:
    holder = f"kswitch {_holder(row).describe(now)}" if row is not None else "nobody"
    return LeaseLost(f"this node ({owner}) lost the journal lease; it is now held by {holder}{then}")


class NodeLease:
    """This process's lease on ``journal``: `acquire` at start-up, heartbeats, `release` on stop.

    ``on_lost`` is called once if a heartbeat, or any write (the writer's `fence`), finds the lease
    taken by another node (this node stalled past the expiry), or if no renewal has succeeded for
    `RENEW_DEADLINE` of the lease (the step-down is timed on ``clock``, not by the heartbeats, which
    wait for a renewal stuck in a stalled database): the switch must stop at once. Never after
    `release`.
    """

    def __init__(self, journal: Any, clock: IReactorTime, on_lost: Callable[[LeaseLost], object], *,
                 seconds: float = LEASE_SECONDS, me: LeaseHolder | None = None) -> None:
        self.journal = journal
        self.me = me or LeaseHolder.this_process()
        self.seconds = seconds
        self._clock = clock
        self._on_lost = on_lost
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = clock
        self._deadline: IDelayedCall | None = None
        self._ended = False
        """Lost or released: nothing more is renewed or reported."""

    def acquire(self) -> Deferred[Taken]:
        """Take the lease (`LeaseHeld` if a live node has it) and start the heartbeat."""
        return ensureDeferred(self._acquire())

    async def _acquire(self) -> Taken:
        sent = self._clock.seconds()
        taken = await self.journal.acquire_lease(self.me, self.seconds)
        self.journal.when_fenced(self._step_down)  # a write found the lease taken: step down now, not at a heartbeat
        self._renewed(sent)
        self._heartbeat.start(self.seconds / 3, now=False)
        if taken.previous is not None:
            log.warning("journal_lease_taken_over", reason=taken.reason,
                        previous=taken.previous.describe(taken.holder.acquired_at))
        log.info("journal_lease_taken", owner=self.me.owner, host=self.me.host, pid=self.me.pid)
        return taken

    def release(self) -> Deferred[bool]:
        """Stop the heartbeat and give the lease up, so the next start need not wait; False if it was no longer
        this node's (lost: the writer's fence refuses the release too, and nothing is left to give up)."""
        lost, self._ended = self._ended, True
        self._stop()
        if lost:
            return succeed(False)
        return self.journal.release_lease(self.me.owner).addErrback(_not_ours)

    def _beat(self) -> Deferred[None]:
        sent = self._clock.seconds()

        def failed(failure: Any) -> None:
            if failure.check(LeaseLost):
                self._step_down(failure.value)
            else:  # the database is unreachable for now: the next beat tries again, until the deadline
                log.warning("journal_lease_renewal_failed", error=failure.getErrorMessage())

        return self.journal.renew_lease(self.me.owner, self.seconds).addCallbacks(
            lambda _: self._renewed(sent), failed)

    def _renewed(self, sent: float) -> None:
        """A renewal sent at ``sent`` succeeded: the lease holds until at least ``sent`` plus its seconds."""
        if self._ended:
            return
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        delay = max(0.0, sent + self.seconds * RENEW_DEADLINE - self._clock.seconds())
        self._deadline = self._clock.callLater(delay, self._overdue, sent)

    def _overdue(self, sent: float) -> None:
        self._deadline = None
        self._step_down(LeaseLost(
            f"this node ({self.me.owner}) could not renew the journal lease for "
            f"{self._clock.seconds() - sent:.0f}s of its {self.seconds:.0f}s (the journal's database is unreachable "
            "or stalled); it steps down before another node may take the lease over"))

    def _step_down(self, error: LeaseLost) -> None:
        if self._ended:
            return
        self._ended = True
        self._stop()
        log.error("journal_lease_lost", error=str(error))
        self._on_lost(error)

    def _stop(self) -> None:
        if self._heartbeat.running:
            self._heartbeat.stop()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None


def _not_ours(failure: Any) -> bool:
    failure.trap(LeaseLost)
    return False


def _columns(me: LeaseHolder) -> dict[str, object]:
    return {"owner": me.owner, "host": me.host, "pid": me.pid}


def _holder(row: Row) -> LeaseHolder:
    return LeaseHolder(owner=row["owner"], host=row["host"], pid=int(row["pid"]), acquired_at=int(row["acquired_at"]),
                       heartbeat_at=int(row["heartbeat_at"]), expires_at=int(row["expires_at"]))
