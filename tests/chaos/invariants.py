"""Money invariants of whole payment lifecycles: web tier, `status`, journal and the bank's ledger.

Each order is judged from three sides that must agree after the run:

* what the web tier was told (`tests.chaos.webtier.Order`: every answer of every attempt);
* what ``status`` says now (``Order.final``) and what the journal holds (the payment and
  its operations, read with the journal's own API);
* what the bank did (banksim's postings: holds, debits, credits, each reversed or not).

`check` gathers every violation (grouped by invariant, each naming the order and what
disagrees) instead of stopping at the first; the invariants are listed in words in
`tests.chaos.test_chaos`.  `bank_postings` is the one place that reads banksim's ledger.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from switch.domain.cardcheck import mask_pan
from switch.engine.status import API_STATUS
from switch.journal import Journal
from switch.journal.models import Direction, Kind, SafState, Status, Transaction
from tests.cardscan import scan
from tests.chaos.webtier import Attempt, Order
from tests.crash.harness import CARDS, MERCHANT, OPENING_BALANCE, Banks, postings
from tests.crash.invariants import Report, chunked

SETTLED_PARENT = ("approved", "captured", "partially_refunded", "refunded")
UNCERTAIN = ("timeout", "pending")  # what an operation may be answered while its outcome is being resolved
NO_MONEY = ("declined", "failed", "reversed", "timeout")
OPERATION_KINDS = (Kind.CAPTURE, Kind.REFUND, Kind.VOID)


@dataclass(frozen=True)
class BankPosting:
    """One movement of money (or hold) at a simulated issuer, as its ledger records it."""

    bank: str
    id: int
    masked_pan: str
    effect: str  # "debit" | "credit" | "hold"
    amount: int
    mti: str
    rrn: str | None
    reversed: bool
    open_hold: bool

    @property
    def moving(self) -> bool:
        """Still moving money: not reversed, and for a hold, not released by a completion."""
        return not self.reversed and (self.effect != "hold" or self.open_hold)

    @property
    def state(self) -> str:
        return "reversed" if self.reversed else "released" if self.effect == "hold" and not self.open_hold else "live"

    def describe(self) -> str:
        return f"{self.bank}#{self.id} {self.mti} {self.effect} {self.amount} RRN {self.rrn} {self.state}"


def bank_postings(banks: Banks) -> list[BankPosting]:
    """Every sale, hold, completion and refund posting of every simulated issuer.

    Reads both banksim ledgers: the in-memory one (postings with the clear PAN; open holds
    only in ``Ledger._holds``) and the SQLite ledger of issue 8 item 14 (postings with
    ``masked_pan`` and ``open``).  Once the latter is on main the first branch can go.
    """
    found = []
    for bank, sim in banks.sims.items():
        open_holds = set(getattr(sim.ledger, "_holds", ()))
        for p in postings(sim):
            if hasattr(p, "masked_pan"):
                masked, is_open = p.masked_pan or "", p.open
            else:
                masked, is_open = mask_pan(p.pan), p.effect == "hold" and p.id in open_holds
            found.append(BankPosting(bank, p.id, masked, p.effect, p.amount, p.mti, p.rrn, p.reversed, is_open))
    return found


@dataclass
class Expected:
    """What ``status`` says the bank should hold for an order, in minor units."""

    debit: int = 0
    credit: int = 0
    hold: int = 0


def expected_money(order: Order) -> Expected:
    final = order.final or {}
    status = final.get("status")
    if status not in SETTLED_PARENT:
        return Expected()
    hold = int(final.get("amount_authorized") or 0) if not order.capture and status == "approved" else 0
    return Expected(int(final.get("amount_captured") or 0), int(final.get("amount_refunded") or 0), hold)


async def _requests_sent(journal: Journal, txn: Transaction) -> list[str]:
    """Field 37 of every authorization or financial message journalled as sent for ``txn`` (a capture
    carries its pre-authorization's RRN; a reversal, sent later, too)."""
    return [m.fields["37"] for m in await journal.messages(txn.txn_id)
            if m.direction is Direction.OUT and m.mti[1] in "12" and "37" in m.fields]


def _short(final: dict[str, Any] | None) -> str:
    if final is None:
        return "no status"
    return (f"status {final.get('status')} ({final.get('reason')}), authorized {final.get('amount_authorized')}, "
            f"captured {final.get('amount_captured')}, refunded {final.get('amount_refunded')}")


async def check(
    journal: Journal, banks: Banks, orders: list[Order], switch_logs: Iterable[Path], dead_letter_excused: set[str],
) -> Report:
    """``dead_letter_excused``: connectors whose bank was unreachable past the SAF maximum (none, normally)."""
    report = Report()
    fail = report.fail

    # -- the journal's view of every order ----------------------------------------------------
    found = await chunked([lambda o=o: journal.find_by_order(MERCHANT, o.order_id) for o in orders])
    txns_of = {o.order_id: list(ts) for o, ts in zip(orders, found)}
    all_txns = [t for ts in txns_of.values() for t in ts]
    sent = await chunked([lambda t=t: _requests_sent(journal, t) for t in all_txns])
    order_of_rrn: dict[tuple[str, str], str] = {}
    for txn, rrns in zip(all_txns, sent):
        for rrn in rrns:
            other = order_of_rrn.setdefault((txn.connector, rrn), txn.order_id or "")
            if other != txn.order_id:
                fail("J journal", f"RRN {rrn} on {txn.connector} sent for two orders: {other} and {txn.order_id}")

    # -- the bank's view ---------------------------------------------------------------------
    bank_of: dict[str, list[BankPosting]] = defaultdict(list)
    all_postings = bank_postings(banks)
    for p in all_postings:
        order_id = order_of_rrn.get((p.bank, p.rrn or ""))
        if order_id is None:
            fail("B1 bank vs status", f"{p.describe()} on {p.masked_pan}: no journalled request of "
                                      f"any order carried this RRN")
        else:
            bank_of[order_id].append(p)

    expected_balance: Counter[tuple[str, str]] = Counter()
    expected_held: Counter[tuple[str, str]] = Counter()
    for order in orders:
        txns = txns_of[order.order_id]
        parents = [t for t in txns if t.parent_txn_id is None]
        children = [t for t in txns if t.parent_txn_id is not None]
        at_bank = bank_of.get(order.order_id, [])
        _web_tier(report, order)
        _status_and_journal(report, order, parents, children)
        expected = expected_money(order)
        expected_balance[order.bank, order.pan] += expected.credit - expected.debit
        expected_held[order.bank, order.pan] += expected.hold
        _bank(report, order, expected, at_bank, children)

    # -- balances, card by card ----------------------------------------------------------------
    for bank, sim in banks.sims.items():
        for card in CARDS:
            if card.bank != bank:
                continue
            balance = OPENING_BALANCE + expected_balance[bank, card.pan]
            available = balance - expected_held[bank, card.pan]
            got = (sim.balance(card.pan), sim.available(card.pan))
            if got != (balance, available):
                fail("B3 balances", f"{bank} {card.pan[:6]}…{card.pan[-4:]}: balance/available {got}, expected "
                                    f"{(balance, available)} from every order's status (off by "
                                    f"{got[0] - balance} / {got[1] - available})")

    # -- nothing pending, dead letters only where the bank was out of reach too long -----------------
    for txn in await journal.in_flight():
        fail("P nothing pending", f"journal {txn.txn_id} ({txn.kind.value} {txn.amount}, order {txn.order_id}) is "
                                  f"still {txn.status.value} ({txn.reason}) after the queue drained")
    for item in await journal.saf_list(states=(SafState.QUEUED,), limit=100_000):
        fail("P nothing pending", f"SAF item {item.saf_id} ({item.kind.value} of {item.txn_id} to {item.connector}) "
                                  f"still queued after {item.attempts} attempt(s): {item.last_error or item.last_response_code}")
    for item in await journal.saf_list(states=(SafState.DEAD,), limit=100_000):
        if item.connector not in dead_letter_excused:
            fail("D dead letters", f"SAF item {item.saf_id} ({item.kind.value} of {item.txn_id} to {item.connector}) "
                                   f"dead after {item.attempts} attempt(s) though the bank was never unreachable past "
                                   f"the maximum: {item.last_error or item.last_response_code}")

    # -- no card data in any run's log ----------------------------------------------------------------
    for path in switch_logs:
        with path.open(encoding="utf-8", errors="replace") as f:
            for number, kinds in scan(f):
                fail("L no card data in logs", f"{path.name} line {number}: {', '.join(kinds)}")

    keyless = Counter(a.op for o in orders for a in o.attempts if a.keyless)
    for op, count in sorted(keyless.items()):
        sent = sum(a.op == op for o in orders for a in o.attempts)
        fail("K lifecycle idempotency", f"{op}: {count} of {sent} request(s) refused idempotency_key (unknown field) "
                                        f"and were sent without it")
    report.summary = _summary(orders, all_txns, all_postings)
    return report


def _web_tier(report: Report, order: Order) -> None:
    """W0: every request got an answer, none was an error or ``internal``."""
    for attempt in order.attempts:
        if attempt.error is not None:
            report.fail("W0 answers", f"{order.describe()}: {attempt.op} answered with error {attempt.error}")
        elif attempt.answer is None:
            report.fail("W0 answers", f"{order.describe()}: {attempt.op} never answered")
        twin = next((a for a in order.attempts if a.twin and a.key == attempt.key), None) if not attempt.twin else None
        if twin is not None and twin.operation_id and attempt.operation_id and twin.operation_id != attempt.operation_id:
            report.fail("W2 one key, one operation", f"{order.describe()}: {attempt.op} sent twice at once under key "
                                                     f"{attempt.key} answered {(attempt.operation_id, attempt.told)} "
                                                     f"and {(twin.operation_id, twin.told)}")
        internal = attempt.outcomes.count("error:internal")
        if internal:
            report.fail("W0 answers", f"{order.describe()}: {attempt.op} answered 'internal' {internal} time(s)")


def _status_and_journal(report: Report, order: Order, parents: list[Transaction], children: list[Transaction]) -> None:
    """W1: the web tier's last answers agree with ``status``; J: the journal's parent totals equal its operations."""
    fail = report.fail
    final, auth = order.final, (order.ops("authorize") or [None])[0]
    if auth is None or auth.answer is None:
        return
    if final is None:
        fail("W1 web tier vs status", f"{order.describe()}: status did not answer")
        return
    where = f"{order.describe()}; status now: {_short(final)}"
    told = auth.told
    voided = any(a.told in ("reversed", "pending") for a in order.ops("void"))
    now = final.get("status")
    if now in ("pending", "timeout"):
        fail("P nothing pending", f"{where}: still {now} after the queue drained")
    agrees = now in ("pending", "timeout") or (
        (told == "approved" and (now in SETTLED_PARENT or (now == "reversed" and bool(order.ops("void")))))
        or (told in ("timeout", "reversed") and now == "reversed")
        or (told == now and told in ("declined", "failed"))
    )
    if not agrees:
        fail("W1 web tier vs status", f"{where}: authorize told {told!r}")
    captures = _approved(order, "capture")
    captured = int(final.get("amount_captured") or 0)
    if len(captures) > 1:
        fail("W1 web tier vs status", f"{where}: {len(captures)} captures were answered approved")
    elif captures and captured != captures[0].answer["operation"]["amount"]:
        fail("W1 web tier vs status", f"{where}: capture of {captures[0].answer['operation']['amount']} answered "
                                      f"approved")
    elif not captures and not order.capture and captured and not any(a.told in UNCERTAIN for a in order.ops("capture")):
        fail("W1 web tier vs status", f"{where}: captured though no capture was approved or left uncertain")
    refunded = sum(a.answer["operation"]["amount"] for a in _approved(order, "refund"))
    uncertain = sum(a.answer["operation"]["amount"] for a in order.ops("refund") if a.told in UNCERTAIN)
    if not refunded <= int(final.get("amount_refunded") or 0) <= refunded + uncertain:
        fail("W1 web tier vs status", f"{where}: refunds answered approved add up to {refunded} (and {uncertain} "
                                      f"more were left uncertain)")
    if voided and now not in ("reversed", "pending"):
        fail("W1 web tier vs status", f"{where}: not reversed, though a void was answered reversed or queued")
    _operations_listed(report, order, children, where)

    if len(parents) != 1:
        fail("J journal", f"{where}: {len(parents)} payments in the journal for this order")
        return
    parent = parents[0]
    journalled = (API_STATUS[parent.status], parent.amount_authorized, parent.amount_captured, parent.amount_refunded)
    answered = (now, final.get("amount_authorized"), final.get("amount_captured"), final.get("amount_refunded"))
    if journalled != answered:
        fail("J journal", f"{where}: journal {parent.txn_id} says (status, authorized, captured, refunded) "
                          f"{journalled}")
    approved = defaultdict(list)
    for child in children:
        if child.status is Status.APPROVED:
            approved[child.kind].append(child.amount)
    totals = {"refunded": (parent.amount_refunded, sum(approved[Kind.REFUND]))}
    if parent.kind is Kind.AUTHORIZATION:
        totals["captured"] = (parent.amount_captured, sum(approved[Kind.CAPTURE]))
    elif now in SETTLED_PARENT:
        totals["captured"] = (parent.amount_captured, parent.amount)  # a sale captures itself
    for name, (total, from_operations) in totals.items():
        if total != from_operations:
            fail("J parent totals == operations", f"{where}: journal {parent.txn_id} {name} {total}, its approved "
                                                  f"operations add up to {from_operations} "
                                                  f"({[(c.kind.value, c.amount, c.status.value) for c in children]})")
    if len(approved[Kind.CAPTURE]) > 1:
        fail("J parent totals == operations", f"{where}: {len(approved[Kind.CAPTURE])} approved captures in the journal")


def _approved(order: Order, op: str) -> list[Attempt]:
    """The attempts answered approved, one per operation (a double submission's two answers may name one)."""
    distinct: dict[Any, Attempt] = {}
    for attempt in order.ops(op):
        if attempt.told == "approved":
            distinct.setdefault(attempt.operation_id or id(attempt), attempt)
    return list(distinct.values())


def _operations_listed(report: Report, order: Order, children: list[Transaction], where: str) -> None:
    """S: ``status`` lists the payment's operations as the journal holds them, none unresolved."""
    ops = [c for c in children if c.kind in OPERATION_KINDS]
    if not ops:
        return
    listed = (order.final or {}).get("operations")
    if not isinstance(listed, list):
        report.fail("S status lists operations", f"{where}: no 'operations' in the status answer; the journal has "
                                                 f"{len(ops)}")
        return
    by_id = {op.get("txn_id"): op for op in listed if isinstance(op, dict)}
    for child in ops:
        entry = by_id.get(child.txn_id)
        seen = (entry or {}).get("kind"), (entry or {}).get("amount"), (entry or {}).get("status")
        if entry is None or seen[:2] != (child.kind.value, child.amount) or \
                (seen[2] == "approved") != (child.status is Status.APPROVED):
            report.fail("S status lists operations", f"{where}: operation {child.txn_id} is listed as {seen}, the "
                                                     f"journal has {(child.kind.value, child.amount, child.status.value)}")
        if seen[2] == "pending":
            report.fail("P nothing pending", f"{where}: operation {child.txn_id} still pending")


def _bank(report: Report, order: Order, expected: Expected, at_bank: list[BankPosting], children: list[Transaction]) -> None:
    """B1: the bank moved what ``status`` says; B2: nothing was debited or credited twice."""
    live = [p for p in at_bank if p.moving]
    got = Expected(
        debit=sum(p.amount for p in live if p.effect == "debit"),
        credit=sum(p.amount for p in live if p.effect == "credit"),
        hold=sum(p.amount for p in live if p.effect == "hold"),
    )
    where = f"{order.describe()}; status now: {_short(order.final)}; bank: {[p.describe() for p in at_bank]}"
    if got != expected:
        report.fail("B1 bank vs status", f"{where}: bank holds debit/credit/hold {vars(got)}, status says "
                                          f"{vars(expected)}")
    debits = [p for p in live if p.effect == "debit"]
    if len(debits) > 1:
        report.fail("B2 no double debit or credit", f"{where}: debited {len(debits)} times")
    credit_rrns = Counter(p.rrn for p in live if p.effect == "credit")
    approved_refunds = sum(c.kind is Kind.REFUND and c.status is Status.APPROVED for c in children)
    if any(n > 1 for n in credit_rrns.values()) or sum(credit_rrns.values()) > approved_refunds:
        report.fail("B2 no double debit or credit", f"{where}: {sum(credit_rrns.values())} live credits for "
                                                    f"{approved_refunds} approved refund(s) in the journal")


def _summary(orders: list[Order], txns: list[Transaction], at_bank: list[BankPosting]) -> dict[str, Any]:
    ops: Counter[str] = Counter()
    for order in orders:
        for attempt in order.attempts:
            ops[f"{attempt.op}:{attempt.told or 'error'}"] += 1
    return {
        "orders": len(orders),
        "orders_by_kind": dict(Counter(o.kind for o in orders)),
        "ops": dict(sorted(ops.items())),
        "retried_after_no_answer": sum(any(x.startswith("no_answer") for x in a.outcomes)
                                       for o in orders for a in o.attempts),
        "keyless_ops": sum(a.keyless for o in orders for a in o.attempts),
        "double_submits": sum(a.twin for o in orders for a in o.attempts),
        "final_status": dict(sorted(Counter(str((o.final or {}).get("status")) for o in orders).items())),
        "journal_txns": dict(sorted(Counter(f"{t.kind.value}:{t.status.value}" for t in txns).items())),
        "bank_postings": dict(sorted(Counter(f"{p.effect}:{p.state}" for p in at_bank).items())),
    }
