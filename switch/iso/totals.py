"""A business day's totals on the wire: the fields of a reconciliation request (0500/1500) and its answer.

Why one module: the switch writes these fields and reads the bank's answer, banksim reads
the request and writes its own totals back, and both must agree on every field number,
width and sign convention.  The totals are a mapping of the names
`switch.domain.settlement.DayTotals` uses, so this layer needs nothing above it.

1987 (jPOS iso87 names) and 1993 carry the same counts and amounts in 74–77, 81 and 86–89;
1993 adds the authorization reversals count in field 90 (1987 has no field for it, so it is
not compared there) and the reconciliation date in field 28 (YYMMDD).  Field 97 is the net:
``C`` when the bank owes the acquirer side (net >= 0), ``D`` when it is owed, then 16 digits.
Field 15 is the business date reconciled (MMDD), field 50 the currency (ISO 4217 numeric);
one message per currency.  The answer's field 66 is 1 (in balance), 2 (out of balance) or
3 (error).  Fees (82–85, 1993's 109/110) are not sent: a bank keeps its own fee book.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from switch.iso.dialect import Message

COUNTS_1987: dict[str, str] = {
    "74": "credits_count", "75": "credit_reversals_count", "76": "debits_count",
    "77": "debit_reversals_count", "81": "authorizations_count",
}
AMOUNTS: dict[str, str] = {
    "86": "credits_amount", "87": "credit_reversals_amount", "88": "debits_amount",
    "89": "debit_reversals_amount",
}
COUNTS_1993: dict[str, str] = {**COUNTS_1987, "90": "authorization_reversals_count"}
NET_FIELD, SETTLEMENT_CODE, DATE_FIELD, CURRENCY_FIELD, RECONCILIATION_DATE = "97", "66", "15", "50", "28"
IN_BALANCE, OUT_OF_BALANCE, ERROR = "1", "2", "3"
_WIDTH = {"count": 10, "amount": 16}


class TotalsError(ValueError):
    """A reconciliation message whose totals cannot be read; the message names the field."""


def compared(version: int) -> tuple[str, ...]:
    """The total names a reconciliation message of this dialect version carries (and so compares)."""
    counts = COUNTS_1987 if version == 1987 else COUNTS_1993
    return (*counts.values(), *AMOUNTS.values(), "net")


def totals_fields(totals: Mapping[str, int], version: int) -> Message:
    """The totals as message fields (no MTI, STAN or date): counts, amounts and the signed net."""
    counts = COUNTS_1987 if version == 1987 else COUNTS_1993
    fields = {number: f"{int(totals.get(name, 0)):0{_WIDTH['count']}d}" for number, name in counts.items()}
    fields.update({number: f"{int(totals.get(name, 0)):0{_WIDTH['amount']}d}" for number, name in AMOUNTS.items()})
    net = int(totals.get("net", 0))
    fields[NET_FIELD] = f"{'C' if net >= 0 else 'D'}{abs(net):016d}"
    return fields


def request_fields(totals: Mapping[str, int], currency_numeric: str, day: date, version: int) -> Message:
    """Everything of a reconciliation request but MTI, STAN and transmission time."""
    fields = totals_fields(totals, version)
    fields[DATE_FIELD] = day.strftime("%m%d")
    fields[CURRENCY_FIELD] = currency_numeric
    if version != 1987:
        fields[RECONCILIATION_DATE] = day.strftime("%y%m%d")
    return fields


def read_totals(message: Mapping[str, str], version: int) -> dict[str, int]:
    """The totals a reconciliation message carries; TotalsError naming the first unreadable field."""
    counts = COUNTS_1987 if version == 1987 else COUNTS_1993
    out: dict[str, int] = {}
    for number, name in (*counts.items(), *AMOUNTS.items()):
        value = message.get(number, "0")
        if not (isinstance(value, str) and value.isascii() and value.isdigit()):
            raise TotalsError(f"field {number} ({name}): expected digits, got {value!r}")
        out[name] = int(value)
    out["net"] = read_net(message.get(NET_FIELD, "C" + "0" * 16))
    return out


def read_net(value: object) -> int:
    """Field 97 (``C``/``D`` and digits) as a signed amount; TotalsError when it is not that."""
    if not (isinstance(value, str) and len(value) >= 2 and value[0] in "CD" and value[1:].isascii()
            and value[1:].isdigit()):
        raise TotalsError(f"field {NET_FIELD} (net): expected C or D and digits, got {value!r}")
    amount = int(value[1:])
    return amount if value[0] == "C" else -amount
