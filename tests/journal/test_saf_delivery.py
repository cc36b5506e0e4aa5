"""Store-and-forward delivery (switch.engine.saf) against a real journal on both backends, with time on a
`twisted.internet.task.Clock` and a stand-in bank that encodes what it is given, as the mux does,
and answers only when the test says so. What is checked is what the bank sees (the messages and
their field 90) and what the journal holds (item states, attempts, reasons, events)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from connectors.base import ConnectorPlugin
from switch.bank.mux import NoLinkAvailable
from switch.engine.saf import SafOptions, StoreAndForward
from switch.iso.dialect import Message, MessageError, load_dialect
from switch.iso.responses import ResponseTable
from switch.iso.translate import AcquirerProfile
from switch.journal import (
    CardData,
    Journal,
    JournalConfig,
    Kind,
    NewTransaction,
    SafDraft,
    SafItem,
    SafKind,
    SafState,
    Status,
    open_journal,
)

RETRY = 10.0
OPTIONS = SafOptions(retry_interval=RETRY, backoff=1.0, max_attempts=3, max_in_flight=4)


class StandInBank:
    """The parts of `switch.engine.bank.Bank` store-and-forward uses; ``pending`` holds what was written."""

    def __init__(self, options: SafOptions = OPTIONS) -> None:
        dialect = load_dialect("iso87ascii")
        self.name = "bank_a"
        self.ready = True
        self.saf = options
        self.profile = AcquirerProfile(dialect, "400001", ResponseTable.for_version(dialect.version))
        self.plugin = ConnectorPlugin(dialect)
        self.pending: list[tuple[Message, Deferred[Message]]] = []
        self.written: list[Message] = []
        self.reserved: set[str] = set()
        self.link_down = False
        self.refused = 0
        self._stans = itertools.count(500)
        self._arrivals: list[tuple[int, Deferred[None]]] = []

    def reserve_stan(self) -> str:
        stan = f"{next(self._stans):06d}"
        self.reserved.add(stan)
        return stan

    def release_stan(self, stan: str) -> None:
        self.reserved.discard(stan)

    def request(
        self, message: Message, timeout: float | None = None, *, encoded: bytes | None = None
    ) -> Deferred[Message]:
        """Like the mux, it owns the STAN from here: given back when nothing is written."""
        self.reserved.discard(message["11"])
        if self.link_down:
            self.refused += 1
            return fail(NoLinkAvailable(self.name, message.get("11"), "no link is ready"))
        try:
            self.profile.dialect.encode(message)
        except MessageError as e:
            return fail(e)
        self.written.append(message)
        answer: Deferred[Message] = Deferred()
        self.pending.append((message, answer))
        for entry in [e for e in self._arrivals if e[0] <= len(self.written)]:
            self._arrivals.remove(entry)
            entry[1].callback(None)
        return answer

    def until_written(self, count: int) -> Deferred[None]:
        """Fires once ``count`` messages have been written in all."""
        arrival: Deferred[None] = Deferred()
        if len(self.written) >= count:
            arrival.callback(None)
        else:
            self._arrivals.append((count, arrival))
        return arrival.addTimeout(10, reactor)

    def answer(self, index: int, code: str) -> None:
        message, deferred = self.pending.pop(index)
        echoed = {k: v for k, v in message.items() if k in ("3", "4", "41", "42", "49")}
        deferred.callback({**echoed, "t": "0410", "11": message["11"], "39": code, "90": message["90"]})

    def original_stans(self) -> list[str]:
        """Field 11 of the original each written message reverses (from field 90), in order."""
        return [m["90"][4:10] for m in self.written]


@pytest_twisted.async_yield_fixture
async def clocked(config: JournalConfig) -> Any:
    clock = Clock()
    clock.advance(int(time.time()))  # whole seconds: due times compare exactly
    journal: Journal = await open_journal(config, reactor, registry=CollectorRegistry(), clock=clock.seconds)
    yield clock, journal
    await journal.close()


def make_saf(clocked: Any, bank: StandInBank) -> StoreAndForward:
    clock, journal = clocked
    return StoreAndForward(clock, journal, {bank.name: bank}, CollectorRegistry())


async def payment(journal: Journal, stan: str, parent: str | None = None) -> str:
    txn = await journal.create_transaction(
        NewTransaction(kind=Kind.CAPTURE if parent else Kind.SALE, merchant_id="m1", connector="bank_a",
                       amount=1250, currency="USD", parent_txn_id=parent, order_id=f"o-{stan}",
                       card=CardData("4111111111111111", "3012"), retain_card=True, stan=stan,
                       transmission_datetime="1123113400")
    )
    await journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.TIMEOUT)
    return txn.txn_id


def template(stan: str) -> dict[str, str]:
    return {"t": "0200", "3": "000000", "4": "000000001250", "7": "1123113400", "11": stan, "32": "400001",
            "41": "WEB00001", "42": "000000000100001", "49": "840", "2": "411111******1111"}


async def enqueue(journal: Journal, txn_id: str, fields: dict[str, str], kind: SafKind = SafKind.REVERSAL) -> SafItem:
    draft = SafDraft(connector="bank_a", kind=kind, mti="0400", fields=fields,
                     card=CardData("4111111111111111", "3012"), max_attempts=OPTIONS.max_attempts)
    return await journal.saf_enqueue(txn_id, draft)


async def step(saf: StoreAndForward, clock: Clock, seconds: float = 0.0) -> None:
    """Let time pass, then let the poll it triggers hand out its items."""
    clock.advance(seconds)
    await saf.poll()


@pytest_twisted.ensureDeferred
async def test_an_unbuildable_item_holds_up_no_other_payment_and_dead_letters_with_its_reason(clocked):
    clock, journal = clocked
    bank = StandInBank()
    saf = make_saf(clocked, bank)
    broken_txn = await payment(journal, "000101")
    broken = await enqueue(journal, broken_txn, {"t": "0220", "3": "000000", "4": "000000001250"})  # no 11, no 7
    good = await enqueue(journal, await payment(journal, "000102"), template("000102"))

    await step(saf, clock)
    await bank.until_written(1)
    assert bank.original_stans() == ["000102"]  # sent at once, although queued after the broken item
    bank.answer(0, "00")
    await saf.idle()
    assert (await journal.saf_get(good.saf_id)).state is SafState.DONE
    first = await journal.saf_get(broken.saf_id)
    assert (first.state, first.attempts) == (SafState.QUEUED, 1)
    assert first.last_error.startswith("not sent: KeyError")
    assert (first.next_due_at - first.last_attempt_at).total_seconds() == RETRY

    late = await enqueue(journal, await payment(journal, "000103"), template("000103"))
    await step(saf, clock)
    await bank.until_written(2)
    assert bank.original_stans() == ["000102", "000103"]  # the broken item's retry wait delays nobody
    bank.answer(0, "00")
    await saf.idle()
    assert (await journal.saf_get(late.saf_id)).state is SafState.DONE

    for _ in range(2):
        await step(saf, clock, RETRY)
        await saf.idle()
    dead = await journal.saf_get(broken.saf_id)
    assert (dead.state, dead.attempts) == (SafState.DEAD, 3)
    assert dead.state_reason.startswith("no final answer after 3 attempts; last: not sent: KeyError")
    notices = [e for e in await journal.events_after(["m1"]) if e.type == "saf.dead_letter"]
    assert [(e.txn_id, e.payload["attempts"], e.payload["last_error"][:19]) for e in notices] == [
        (broken_txn, 3, "not sent: KeyError:")
    ]
    assert bank.original_stans() == ["000102", "000103"] and bank.reserved == set()  # every STAN given back
    assert (await journal.get_transaction(broken_txn)).status is Status.TIMEOUT


@pytest_twisted.ensureDeferred
async def test_items_of_one_payment_stay_in_order_while_others_pass(clocked):
    clock, journal = clocked
    bank = StandInBank()
    saf = make_saf(clocked, bank)
    sale = await payment(journal, "000201")
    capture = await payment(journal, "000202", parent=sale)
    first = await enqueue(journal, sale, template("000201"))
    second = await enqueue(journal, sale, template("000201"), kind=SafKind.VOID)
    third = await enqueue(journal, capture, template("000202"))
    other = await enqueue(journal, await payment(journal, "000203"), template("000203"))

    await step(saf, clock)
    await bank.until_written(2)
    assert bank.original_stans() == ["000201", "000203"]
    bank.answer(0, "91")  # the bank asks for a repeat of the first: the rest of its payment waits
    bank.answer(0, "00")
    await saf.idle()
    await step(saf, clock, RETRY - 1)
    assert bank.pending == [] and (await journal.saf_get(second.saf_id)).attempts == 0

    await step(saf, clock, 1)
    await bank.until_written(3)
    assert [m["t"] for m in bank.written] == ["0400", "0400", "0401"]  # the repeat MTI
    bank.answer(0, "00")
    await saf.idle()
    await bank.until_written(4)
    assert bank.original_stans()[3:] == ["000201"] and len(bank.pending) == 1  # the void, alone
    bank.answer(0, "00")
    await saf.idle()
    await bank.until_written(5)
    assert bank.original_stans()[4:] == ["000202"]  # the capture's reversal after its parent's void
    bank.answer(0, "00")
    await saf.idle()
    states = [(await journal.saf_get(i.saf_id)).state for i in (first, second, third, other)]
    assert states == [SafState.DONE] * 4
    assert (await journal.get_transaction(sale)).status is Status.REVERSED


def journal_refuses(bank: StandInBank, item: SafItem, stan: str, repeat: bool) -> Message:
    return {"t": "04", "11": stan, "7": "1123113400", "3": "000000", "90": "0" * 42}  # not an MTI


def cannot_encode(bank: StandInBank, item: SafItem, stan: str, repeat: bool) -> Message:
    return {"t": "0400", "11": stan, "7": "1123113400", "3": "000000", "4": "12.50", "90": "0" * 42}


@pytest.mark.parametrize("build, error", [
    (journal_refuses, "not sent: InvalidRecord"),
    (cannot_encode, "not sent: MessageError"),
])  # fmt: skip
@pytest_twisted.ensureDeferred
async def test_failures_before_the_write_are_counted_attempts(clocked, build: Callable[..., Message], error: str):
    clock, journal = clocked
    bank = StandInBank()
    saf = make_saf(clocked, bank)
    saf.build = build
    item = await enqueue(journal, await payment(journal, "000301"), template("000301"))
    await step(saf, clock)
    await saf.idle()
    after = await journal.saf_get(item.saf_id)
    assert (after.attempts, after.state) == (1, SafState.QUEUED) and after.last_error.startswith(error)
    assert "4111111111111111" not in after.last_error
    assert bank.written == [] and bank.reserved == set()


@pytest_twisted.ensureDeferred
async def test_no_ready_link_is_not_an_attempt(clocked):
    clock, journal = clocked
    bank = StandInBank()
    saf = make_saf(clocked, bank)
    item = await enqueue(journal, await payment(journal, "000401"), template("000401"))
    bank.link_down = True
    for _ in range(OPTIONS.max_attempts + 1):
        await step(saf, clock, RETRY)
        await saf.idle()
    assert bank.refused == OPTIONS.max_attempts + 1  # tried at every poll, never counted
    assert (await journal.saf_get(item.saf_id)).attempts == 0 and bank.reserved == set()
    bank.link_down = False
    await step(saf, clock, 1)
    await bank.until_written(1)
    assert bank.original_stans() == ["000401"]
    bank.answer(0, "00")
    await saf.idle()
    assert (await journal.saf_get(item.saf_id)).state is SafState.DONE


@pytest_twisted.ensureDeferred
async def test_at_most_max_in_flight_items_per_connector(clocked):
    clock, journal = clocked
    bank = StandInBank(SafOptions(retry_interval=RETRY, max_in_flight=2))
    saf = make_saf(clocked, bank)
    for stan in ("000501", "000502", "000503"):
        await enqueue(journal, await payment(journal, stan), template(stan))
    await step(saf, clock)
    await bank.until_written(2)
    assert bank.original_stans() == ["000501", "000502"]
    bank.answer(1, "00")  # one slot frees: the third goes while the first is still unanswered
    await bank.until_written(3)
    assert bank.original_stans() == ["000501", "000502", "000503"] and len(bank.pending) == 2
