"""Late answers: which transaction, if any, a bank's answer that came after its request gave up belongs to.

A STAN alone cannot say: six digits wrap every ~17 minutes at 1,000 messages a second,
so an answer matched by STAN could settle another merchant's transaction.  The answer
is attached only to the one transaction whose request, as journalled at send time,
agrees with it on every identifying field the answer carries: connector, STAN (11),
transmission date/time (7), RRN (37), amount (4), terminal (41), and the MTI pair.
An answer that carries neither field 7 nor field 37 cannot be told apart from an
answer to an earlier use of its STAN, and one that matches nothing (or more than one
transaction) is *unknown*: logged, counted, attached to nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from switch.engine.bank import Bank
from switch.iso.dialect import Message
from switch.iso.mti import is_request, response_mti
from switch.journal import Direction, Journal, Transaction
from switch.observe.metrics import Counter, MetricBundle

log = structlog.get_logger("kswitch.late")

IDENTIFYING_FIELDS = ("4", "7", "11", "37", "41")


class LateMetrics(MetricBundle):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.answers = Counter(
            "kswitch_late_answers",
            "Answers after their request gave up: matched (attached to its transaction) or unknown",
            ["connector", "outcome"], registry=registry,
        )


async def match_late(journal: Journal, bank: Bank, message: Message) -> Transaction | None:
    """The transaction ``message`` (a late answer from ``bank``) belongs to, or None if unknown."""
    metrics = LateMetrics.on(journal.metrics.registry).answers
    stan, sent, rrn = message.get("11"), message.get("7"), message.get("37")
    found: list[Transaction] = []
    if stan and (sent or rrn):
        for txn in await journal.find_sent(bank.name, stan, transmission_datetime=sent or None, rrn=rrn or None):
            request = await _request(journal, txn)
            if request is not None and _agrees(message, request):
                found.append(txn)
    if len(found) != 1:
        metrics.labels(bank.name, "unknown").inc()
        log.warning("late_response_unknown", connector=bank.name, mti=message.get("t"), stan=stan,
                    transmission_datetime=sent, rrn=rrn, candidates=len(found))
        return None
    metrics.labels(bank.name, "matched").inc()
    return found[0]


async def _request(journal: Journal, txn: Transaction) -> tuple[str, Mapping[str, Any]] | None:
    """The (MTI, masked fields) of the request journalled with ``txn`` under its STAN."""
    for record in await journal.messages(txn.txn_id):
        if record.direction is Direction.OUT and str(record.fields.get("11", "")) == txn.stan:
            return record.mti, record.fields
    return None


def _agrees(answer: Message, request: tuple[str, Mapping[str, Any]]) -> bool:
    mti, fields = request
    answer_mti = answer.get("t", "")
    if not is_request(mti) or len(answer_mti) != 4 or response_mti(mti)[:3] != answer_mti[:3]:
        return False
    for number in IDENTIFYING_FIELDS:
        if number in answer and _norm(number, answer[number]) != _norm(number, fields.get(number)):
            return False
    return True


def _norm(number: str, value: object) -> str | None:
    """Amounts and STANs compare as numbers ("000000001000" == "1000"); text without padding."""
    if value is None:
        return None
    text = str(value).strip()
    if number in ("4", "11") and text.isdigit():
        return str(int(text))
    return text
