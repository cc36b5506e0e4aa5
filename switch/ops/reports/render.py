"""A settlement report as an operator reads it (table), a program reads it (JSON, CSV) or accounting opens it (xlsx).

JSON and CSV carry minor units, as the journal does; the table and the xlsx show money in
the currency's major unit (its ISO 4217 exponent: 2 for USD, 0 for JPY, 3 for
BHD), the xlsx as numbers with a matching number format so sums stay exact in a
spreadsheet. The CSV is the three sections one after another, each with its own header
line, separated by an empty line; the xlsx is one sheet per section. Table and xlsx end
the banks and merchants sections with a totals row per currency (the gateway section has
one row per currency already).
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any, Callable

from switch.domain.currency import by_alpha
from switch.ops.reports.build import MONEY_COLUMNS, SettlementReport, columns, totals

SECTIONS = ("banks", "merchants", "gateway")
CONTENT_TYPES = {
    "table": "text/plain; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
FORMATS = tuple(CONTENT_TYPES)
_NAMES = ("bank", "merchant", "currency")
"""Columns of names, aligned left in the table (numbers align right)."""


def _exponent(currency: str) -> int:
    found = by_alpha(currency)
    return found.exponent if found is not None else 0


def _major(amount: int, currency: str) -> str:
    exponent = _exponent(currency)
    return f"{Decimal(amount).scaleb(-exponent):,.{exponent}f}"


def _rows(report: SettlementReport, section: str) -> list[dict[str, Any]]:
    return [vars(row) for row in getattr(report, section)]


def _totals(report: SettlementReport, section: str) -> dict[str, dict[str, int]]:
    return {} if section == "gateway" else totals(getattr(report, section))


def as_json(report: SettlementReport) -> bytes:
    return json.dumps(report.as_dict(), indent=2).encode() + b"\n"


def as_csv(report: SettlementReport) -> bytes:
    out = io.StringIO()
    for number, section in enumerate(SECTIONS):
        if number:
            out.write("\n")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("business_date", *columns(section)))
        writer.writerows((report.business_date, *row.values()) for row in _rows(report, section))
    return out.getvalue().encode()


def _cell(name: str, value: Any, currency: str, section: str) -> str:
    return _major(value, currency) if name in MONEY_COLUMNS[section] else str(value)


def as_table(report: SettlementReport) -> bytes:
    lines = [f"Settlement report, business date {report.business_date}"
             + "".join(f", {k} {v}" for k, v in (("bank", report.bank), ("merchant", report.merchant)) if v)]
    for section in SECTIONS:
        names = columns(section)
        body = [[_cell(n, row[n], row["currency"], section) for n in names] for row in _rows(report, section)]
        for currency, sums in _totals(report, section).items():
            body.append(["TOTAL" if n == names[0] else currency if n == "currency" else
                         _cell(n, sums.get(n, 0), currency, section) for n in names])
        widths = [max(len(n), *(len(r[i]) for r in body)) for i, n in enumerate(names)]
        lines += ["", f"{section}:" if body else f"{section}: none",
                  *("  ".join(c.ljust(w) if n in _NAMES else c.rjust(w) for n, c, w in zip(names, r, widths))
                    for r in ([list(names)] + body if body else []))]
    return "\n".join(line.rstrip() for line in lines).encode() + b"\n"


def _money_format(currency: str) -> str:
    exponent = _exponent(currency)
    places = "." + "0" * exponent if exponent else ""
    return f"#,##0{places};-#,##0{places}"


def as_xlsx(report: SettlementReport) -> bytes:
    from openpyxl import Workbook  # only when asked: every kswitch command imports this module
    from openpyxl.styles import Font

    book = Workbook()
    book.remove(book.active)
    bold = Font(bold=True)
    for section in SECTIONS:
        sheet = book.create_sheet(section.capitalize())
        names = ("business_date", *columns(section))
        sheet.append(names)
        for cell in sheet[1]:
            cell.font = bold
        lines = [(report.business_date, row, False) for row in _rows(report, section)]
        lines += [("TOTAL", {"currency": currency, **sums}, True)
                  for currency, sums in _totals(report, section).items()]
        for first, row, total in lines:
            currency = row["currency"]
            values: list[Any] = [first]
            for name in names[1:]:
                value = row.get(name, "")
                if name in MONEY_COLUMNS[section]:
                    value = Decimal(value).scaleb(-_exponent(currency))
                values.append(value)
            sheet.append(values)
            for name, cell in zip(names, sheet[sheet.max_row]):
                if name in MONEY_COLUMNS[section]:
                    cell.number_format = _money_format(currency)
                if total:
                    cell.font = bold
        for letter, name in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", names):
            sheet.column_dimensions[letter].width = max(12, len(name) + 2)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


RENDERERS: dict[str, Callable[[SettlementReport], bytes]] = {
    "table": as_table, "csv": as_csv, "json": as_json, "xlsx": as_xlsx,
}


def render(report: SettlementReport, format: str) -> bytes:
    """``report`` in ``format`` (one of `FORMATS`)."""
    return RENDERERS[format](report)
