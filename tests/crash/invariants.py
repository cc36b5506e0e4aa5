"""Money invariants between the web tier's answers, the journal and the issuer's ledger.

`check` gathers every violation instead of stopping at the first, so one failed run
says everything that went wrong; see `tests.crash.test_crash_recovery` for the
invariants in words.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from twisted.internet.defer import ensureDeferred, gatherResults

from switch.journal import Journal
from switch.journal.models import CardData, Direction, Kind, SafState, Status, Transaction
from tests.cardscan import scan
from tests.crash.harness import CARDS, EXPIRY, MERCHANT, OPENING_BALANCE, Banks, postings
from tests.crash.webtier import WebRequest

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
APPROVED = (Status.APPROVED, Status.CAPTURED)
MONEY_EFFECT = {Kind.SALE: "debit", Kind.AUTHORIZATION: "hold"}
# What the web tier may be told for a payment whose money must end up back with the cardholder.
NOT_AUTHORIZED_ANSWERS = ("timeout", "reversed")


@dataclass
class Report:
    violations: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    summary: dict[str, Any] = field(default_factory=dict)

    def fail(self, invariant: str, message: str) -> None:
        self.violations[invariant].append(message)

    def render(self, limit: int = 12) -> str:
        lines = []
        for invariant, messages in sorted(self.violations.items()):
            lines.append(f"{invariant}: {len(messages)} violation(s)")
            lines += [f"    {m}" for m in messages[:limit]]
            if len(messages) > limit:
                lines.append(f"    … and {len(messages) - limit} more")
        return "\n".join(lines)


def _masked(pan: str) -> str:
    return f"{pan[:6]}…{pan[-4:]}"


async def chunked(calls: list[Any], size: int = 200) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(calls), size):
        results += await gatherResults([ensureDeferred(call()) for call in calls[start : start + size]], consumeErrors=True)
    return results


async def _original_rrn(journal: Journal, txn: Transaction) -> str | None:
    """Field 37 of the request the switch sent (journalled, masked, before the bank saw it)."""
    for m in await journal.messages(txn.txn_id):
        if m.direction is Direction.OUT and m.mti[1] in "12" and m.mti[2] == "0":  # x100 / x200, not x400/x800
            return m.fields.get("37")
    return None


async def check(journal: Journal, banks: Banks, requests: list[WebRequest], switch_logs: Iterable[Path]) -> Report:
    report = Report()
    fail = report.fail

    # -- census: every transaction in the journal, through the public look-up by card ----------------
    txns: dict[str, Transaction] = {}
    for card in CARDS:
        for txn in await journal.find_by_pan(CardData(card.pan, EXPIRY), since=EPOCH, limit=1_000_000):
            txns[txn.txn_id] = txn
    ordered = sorted(txns.values(), key=lambda t: t.created_at)
    rrns = dict(zip([t.txn_id for t in ordered],
                    await chunked([lambda t=t: _original_rrn(journal, t) for t in ordered])))
    by_rrn: dict[tuple[str, str], Transaction] = {}
    for txn in ordered:
        rrn = rrns[txn.txn_id]
        if rrn is None:
            if txn.status not in (Status.FAILED,):
                fail("I0 journal", f"{txn.txn_id} ({txn.status.value}) has no journalled request to the bank")
            continue
        if (txn.connector, rrn) in by_rrn:
            fail("I0 journal", f"RRN {rrn} used by two transactions: {by_rrn[txn.connector, rrn].txn_id} and {txn.txn_id}")
        by_rrn[txn.connector, rrn] = txn
    by_order: dict[str, list[Transaction]] = defaultdict(list)
    for txn in ordered:
        by_order[txn.order_id or ""].append(txn)
    request_of = {r.order_id: r for r in requests}
    for order_id, found in by_order.items():
        if order_id not in request_of:
            fail("I0 journal", f"transaction(s) {[t.txn_id for t in found]} for order {order_id!r} nobody sent")

    # -- I1/I2: the issuer's postings against the journal ------------------------------------------
    unreversed: dict[str, list[Any]] = defaultdict(list)  # txn_id -> postings still moving money
    posting_count = reversed_count = 0
    for bank, sim in banks.sims.items():
        seen: Counter[str | None] = Counter()
        for p in postings(sim):
            posting_count += 1
            reversed_count += p.reversed
            seen[p.rrn] += 1
            where = f"{bank} posting #{p.id} ({p.effect} {p.amount} on {_masked(p.masked_pan or '')}, RRN {p.rrn}, STAN {p.stan}" \
                    f"{', reversed' if p.reversed else ''})"
            if p.effect not in ("debit", "hold"):
                fail("I1 bank vs journal", f"{where}: unexpected effect; the test sends only sales and pre-authorizations")
                continue
            txn = by_rrn.get((bank, p.rrn or ""))
            if txn is None:
                fail("I1 bank vs journal", f"{where}: no journal transaction sent this request")
                continue
            if (p.amount, p.effect, _masked(p.masked_pan or "")) != (txn.amount, MONEY_EFFECT.get(txn.kind),
                                                         _masked(txn.masked_pan or "")):
                fail("I1 bank vs journal", f"{where}: differs from journal {txn.txn_id} ({txn.kind.value} {txn.amount})")
            if not p.reversed:
                unreversed[txn.txn_id].append(p)
                if txn.status not in APPROVED:
                    fail("I1 bank vs journal", f"{where}: money moved at the bank but journal {txn.txn_id} is "
                                               f"{txn.status.value} (reason {txn.reason})")
        for rrn, count in seen.items():
            if count > 1:
                fail("I2 no double debit", f"{bank} posted RRN {rrn} {count} times")
    for txn in ordered:
        if txn.status in APPROVED and len(unreversed[txn.txn_id]) != 1:
            fail("I1 bank vs journal", f"journal {txn.txn_id} is {txn.status.value} ({txn.kind.value} {txn.amount}) "
                                       f"but the bank holds {len(unreversed[txn.txn_id])} un-reversed posting(s) for it")
    per_order = Counter(txns[txn_id].order_id for txn_id, ps in unreversed.items() for _ in ps)
    for order_id, count in per_order.items():
        if count > 1:
            fail("I2 no double debit", f"order {order_id} has {count} un-reversed postings at the bank")

    # -- I3: balances and available amounts, account by account ------------------------------------
    debits: Counter[tuple[str, str]] = Counter()
    holds: Counter[tuple[str, str]] = Counter()
    for txn in ordered:
        if txn.status not in APPROVED:
            continue
        request = request_of.get(txn.order_id or "")
        if request is None:
            continue
        (debits if txn.kind is Kind.SALE else holds)[txn.connector, request.pan] += txn.amount
    for bank, sim in banks.sims.items():
        for card in CARDS:
            expected_balance = OPENING_BALANCE - debits[bank, card.pan]
            expected_available = expected_balance - holds[bank, card.pan]
            got = (sim.balance(card.pan), sim.available(card.pan))
            if got != (expected_balance, expected_available):
                fail("I3 balances", f"{bank} {_masked(card.pan)}: balance/available {got}, expected "
                                    f"{(expected_balance, expected_available)} from the journal's approvals "
                                    f"(off by {got[0] - expected_balance} / {got[1] - expected_available})")

    # -- I4: what the web tier was told against the journal ------------------------------------------
    answers: Counter[str] = Counter()
    for r in requests:
        found = by_order.get(r.order_id, [])
        final = r.final["status"] if r.final is not None else f"error:{r.error}" if r.error else "no answer"
        answers[final if r.final is not None or r.error else "no answer"] += 1
        if r.final is None:
            fail("I4 web tier vs journal", f"{r.describe()}: no final answer ({final})")
        if len(found) != 1:
            fail("I4 web tier vs journal", f"{r.describe()}: {len(found)} journal transactions for this order")
            continue
        txn = found[0]
        if txn.idempotency_key != r.idempotency_key or txn.amount != r.amount or txn.kind.value != r.kind:
            fail("I4 web tier vs journal", f"{r.describe()}: journal {txn.txn_id} records other request data")
        if r.final is None:
            continue
        if r.final["txn_id"] != txn.txn_id:
            fail("I4 web tier vs journal", f"{r.describe()}: answered with {r.final['txn_id']}, journal has {txn.txn_id}")
        told, now = r.final["status"], txn.status
        ok = (
            (told == "approved" and now in APPROVED)
            or (told in NOT_AUTHORIZED_ANSWERS and now is Status.REVERSED)
            or (told == "declined" and now is Status.DECLINED)
            or (told == "failed" and now is Status.FAILED)
        )
        if not ok:
            fail("I4 web tier vs journal", f"{r.describe()}: web tier last told {told!r}, journal {txn.txn_id} is "
                                           f"{now.value} (reason {txn.reason})")
        if told in ("declined", "failed") and unreversed.get(txn.txn_id):
            fail("I4 web tier vs journal", f"{r.describe()}: told {told} but money moved at the bank")
        if told == "pending":
            fail("I4 web tier vs journal", f"{r.describe()}: authorize answered 'pending' (the spec says never)")

    # -- I5: nothing left in flight, nothing waiting or dead in store-and-forward ---------------------
    for txn in await journal.in_flight():
        fail("I5 nothing pending", f"{txn.txn_id} is still {txn.status.value} ({txn.kind.value} {txn.amount}, "
                                   f"reason {txn.reason})")
    for item in await journal.saf_list(states=(SafState.QUEUED, SafState.DEAD), limit=10_000):
        fail("I5 nothing pending", f"SAF item {item.saf_id} for {item.txn_id} is {item.state.value} after "
                                   f"{item.attempts} attempt(s) ({item.last_error or item.last_response_code})")

    # -- I6: the switch's own logs hold no card data, crashes or not -----------------------------------
    for path in switch_logs:
        with path.open(encoding="utf-8", errors="replace") as f:
            for number, kinds in scan(f):
                fail("I6 no card data in logs", f"{path.name} line {number}: {', '.join(kinds)}")

    events = []
    after = 0
    while batch := await journal.events_after([MERCHANT], after, limit=500):
        events += batch
        after = batch[-1].event_id
    report.summary = {
        "requests": len(requests),
        "requests_retried_after_no_answer": sum(any(o.startswith("no_answer") for o in r.outcomes) for r in requests),
        "web_answers": dict(sorted(answers.items())),
        "answers_after_retry": dict(sorted(Counter(
            r.outcomes[-1] for r in requests if any(o.startswith("no_answer") for o in r.outcomes)).items())),
        "journal": dict(sorted(Counter(t.status.value for t in ordered).items())),
        "bank_postings": posting_count,
        "bank_postings_reversed": reversed_count,
        "late_responses": sum(e.type == "payment.late_response" for e in events),
    }
    return report
