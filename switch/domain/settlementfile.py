"""A bank's settlement file: one CSV line per posting of a business date.

Why one definition here: banksim writes these files and ``kswitch reconcile`` reads them,
and a bank's real file is checked against the same rules; a format written twice drifts.
Pure text in and out (no file, no clock), so a property test can feed it anything.

The format (README, "Reconciliation by file"): ASCII, a header line `HEADER`, then one
line per posting, fields separated by commas, no quoting (no field may hold a comma):

* ``business_date`` ``YYYY-MM-DD``: the bank's business date of the posting;
* ``rrn`` (1-12 letters or digits, or empty) and ``stan`` (1-12 digits): the message's
  references; a reversal carries the references of the transaction it reverses;
* ``terminal`` (up to 16 printable characters, or empty);
* ``card``: the masked card or account number (digits and ``*``; a bare 13-19 digit
  number is refused: no full card number in a file);
* ``amount``: minor units of ``currency`` (ISO 4217 alphabetic), no sign;
* ``type``: `TYPES`; ``auth_code`` (up to 6 letters, digits or spaces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import date

from switch.domain.currency import by_alpha

HEADER = "business_date,rrn,stan,terminal,card,amount,currency,type,auth_code"
COLUMNS = tuple(HEADER.split(","))
TYPES = ("debit", "credit", "debit_reversal", "credit_reversal")
"""Money moved from the cardholder (sale, capture), to the cardholder (refund), or either undone."""

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "rrn": (re.compile(r"[A-Za-z0-9]{0,12}", re.ASCII), "up to 12 letters or digits"),
    "stan": (re.compile(r"\d{1,12}", re.ASCII), "1 to 12 digits"),
    "terminal": (re.compile(r"[\x20-\x2b\x2d-\x7e]{0,16}", re.ASCII), "up to 16 printable characters"),
    "card": (re.compile(r"[0-9*]{0,19}", re.ASCII), "a masked card or account number (digits and *)"),
    "amount": (re.compile(r"\d{1,12}", re.ASCII), "minor units: 1 to 12 digits, no sign"),
    "auth_code": (re.compile(r"[A-Za-z0-9 ]{0,6}", re.ASCII), "up to 6 letters, digits or spaces"),
}


class SettlementFileError(ValueError):
    """A settlement file that cannot be read: the message names the line and the field."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class SettlementLine:
    """One posting as the bank's file states it (amount in minor units)."""

    business_date: str
    rrn: str
    stan: str
    terminal: str
    card: str
    amount: int
    currency: str
    type: str
    auth_code: str

    def text(self) -> str:
        """The line as written in the file (without its newline)."""
        return ",".join(str(getattr(self, f.name)) for f in fields(self))


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def parse_date(text: str) -> str:
    """A business date as written everywhere: ``YYYY-MM-DD``, a real date; ValueError otherwise."""
    if isinstance(text, str) and _DATE.fullmatch(text):
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            pass
    raise ValueError(f"expected a date YYYY-MM-DD, got {_shown(str(text))}")


def _field(number: int, name: str, value: str) -> str:
    if name == "business_date":
        try:
            return parse_date(value)
        except ValueError as e:
            raise SettlementFileError(number, f"business_date: {e}") from None
    if name == "currency":
        if by_alpha(value) is None:
            raise SettlementFileError(number, f"currency: expected an ISO 4217 code such as USD, got {_shown(value)}")
        return value
    if name == "type":
        if value not in TYPES:
            raise SettlementFileError(number, f"type: expected one of {', '.join(TYPES)}, got {_shown(value)}")
        return value
    pattern, expected = _FORMATS[name]
    if not pattern.fullmatch(value):
        raise SettlementFileError(number, f"{name}: expected {expected}, got {_shown(value)}")
    if name == "card" and value.isdigit() and len(value) >= 13:
        raise SettlementFileError(number, "card: a full card number; a settlement file carries masked numbers only")
    return value


def parse_line(number: int, text: str) -> SettlementLine:
    """One data line (``number`` is its line number in the file, for the error)."""
    values = text.split(",")
    if len(values) != len(COLUMNS):
        raise SettlementFileError(number, f"expected {len(COLUMNS)} comma-separated fields ({HEADER}), "
                                          f"got {len(values)}")
    parsed = {name: _field(number, name, value) for name, value in zip(COLUMNS, values)}
    return SettlementLine(**{**parsed, "amount": int(parsed["amount"])})  # type: ignore[arg-type]


def parse_file(data: bytes) -> list[SettlementLine]:
    """Every line of a settlement file; SettlementFileError at the first one that is not right.

    Lines end in LF or CRLF; the last may lack its newline. A blank line is an error (a bank's
    file has none; one in the middle means something was cut), except the file's end.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SettlementFileError(line, "not ASCII text (a settlement file is plain ASCII)") from None
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    rows = [row[:-1] if row.endswith("\r") else row for row in rows]
    if not rows or rows[0] != HEADER:
        raise SettlementFileError(1, f"expected the header {HEADER!r}, got {_shown(rows[0] if rows else '')}")
    lines = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            raise SettlementFileError(number, "empty line")
        lines.append(parse_line(number, row))
    return lines


def render_file(lines: list[SettlementLine]) -> bytes:
    """The file for ``lines``: the header, then one line each, every line ending in LF."""
    return "".join(f"{row}\n" for row in [HEADER, *(line.text() for line in lines)]).encode("ascii")
