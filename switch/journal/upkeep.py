"""The journal's upkeep: idempotency-key expiry, PAN key rotation, the node lease, counters."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from twisted.internet import defer

from switch.journal import cards, counters, lease, store
from switch.journal.again import until_known
from switch.journal.base import JournalBase, log, microseconds
from switch.journal.units import Call

PURGE_CHUNK = 10_000
"""Idempotency keys released by one writer unit. Why: an hour's keys at a busy gateway are millions of rows, and
the payments batched with one DELETE of them all would wait for it, past the writer's deadline on PostgreSQL
(`switch.journal.config.PG_BATCH_DEADLINE`); in chunks each unit takes a fraction of a second."""


class UpkeepApi(JournalBase):
    def purge_idempotency_keys(self, chunk: int = PURGE_CHUNK) -> defer.Deferred[int]:
        """Release idempotency keys older than ``idempotency_ttl``, ``chunk`` a writer unit; fires with how many."""
        cutoff = self._now() - microseconds(self._config.idempotency_ttl)
        return defer.ensureDeferred(self._purge_idempotency_keys(cutoff, chunk))

    async def _purge_idempotency_keys(self, cutoff: int, chunk: int) -> int:
        total = 0
        while (gone := await self._writer.submit(Call(store.purge_idempotency_keys, cutoff, chunk))) == chunk:
            total += gone
        return total + gone

    def key_usage(self) -> defer.Deferred[Mapping[str, int]]:
        """Stored PAN ciphertexts per key id: a retired key can leave the ring once it reads 0."""
        return self._readers.read(cards.key_usage)

    def rewrap_cards(self, batch: int = 500) -> defer.Deferred[int]:
        """Re-encrypt every stored PAN under the current key with AES-GCM-SIV, a batch at a time; fires
        with the count.

        Run it after adding a new current key; once `key_usage` shows an old key at 0
        that key can leave the ring.
        """
        return defer.ensureDeferred(self._rewrap_cards(batch))

    async def _rewrap_cards(self, batch: int) -> int:
        current = self._vault.current_key_id
        total = 0
        for spec in cards.CARD_TABLES:
            while stale := await self._readers.read(
                functools.partial(cards.stale_cards, spec=spec, current_key_id=current, limit=batch)
            ):
                items = [(row_id, old, self._vault.seal(self._vault.open(old), old.context)) for row_id, old in stale]
                total += await self._writer.submit(Call(cards.reseal_many, spec=spec, items=items))
        log.info("journal_cards_rewrapped", count=total, key_id=current)
        return total

    # One node per journal, persisted counters

    def acquire_lease(self, me: lease.LeaseHolder, seconds: float) -> defer.Deferred[lease.Taken]:
        """Take the journal's node lease for ``seconds`` (`lease.LeaseHeld` if a live node has it); taken
        again if the journal cannot say whether it was (`until_known`: a lease already ``me``'s is renewed).
        Once taken, every writer batch is fenced with it (`lease.fence`): none commits after another node took
        the lease over."""
        return defer.ensureDeferred(self._acquire_lease(me, int(seconds * 1_000_000)))

    async def _acquire_lease(self, me: lease.LeaseHolder, ttl: int) -> lease.Taken:
        taken: lease.Taken = await until_known(
            self._reactor, "acquire_lease",
            lambda: self._writer.submit(Call(lease.acquire, me, now=self._now(), ttl=ttl)))
        self._writer.share(lease.SHARED_OWNER, me.owner)
        return taken

    def renew_lease(self, owner: str, seconds: float) -> defer.Deferred[None]:
        now, ttl = self._now(), int(seconds * 1_000_000)
        return self._writer.submit(Call(lease.renew, owner, now=now, ttl=ttl))

    def release_lease(self, owner: str) -> defer.Deferred[bool]:
        return self._writer.submit(Call(lease.release, owner))

    def reserve_numbers(self, name: str, count: int) -> defer.Deferred[int]:
        """Durably take ``count`` numbers of counter ``name``; fires with the first (see `counters`). A block
        the journal cannot say it reserved is left unused and another reserved (`until_known`)."""
        return defer.ensureDeferred(until_known(
            self._reactor, f"reserve_numbers {name}", lambda: self._writer.submit(Call(counters.reserve, name, count))))
