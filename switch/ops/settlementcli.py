"""`kswitch reconcile` and `kswitch report settlement`: the operator's side of the day's settlement.

Both read the journal directly (beside a running switch, like `kswitch saf list`) and
change nothing. Everything an operator can get wrong (bank, date, file, format) is checked
before the journal is opened, and refused in one line with exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Collection

from switch.domain.settlementfile import SettlementFileError, SettlementLine, parse_date, parse_file
from switch.ops import daybook, reconcile
from switch.ops.reports.build import settlement_report
from switch.ops.reports.render import FORMATS, render


class Refused(ValueError):
    """An operator's mistake found before the journal is read: one line, exit status 2."""


def _date(text: str) -> str:
    try:
        return parse_date(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parsers(sub: Any, config: argparse.ArgumentParser) -> None:
    rec = sub.add_parser("reconcile", help="match a bank's settlement file with the journal, transaction by "
                         "transaction (exit 0: clean, 1: exceptions, 2: bad input)", parents=[config])
    rec.add_argument("--bank", required=True, help="the connector the file comes from")
    rec.add_argument("--date", required=True, type=_date, metavar="YYYY-MM-DD", help="the business date")
    rec.add_argument("--file", required=True, type=Path, help="the bank's settlement file (CSV, README)")
    rec.add_argument("--json", action="store_true")
    report = sub.add_parser("report", help="reports from the journal", parents=[config])
    kind = report.add_subparsers(dest="report", required=True)
    settle = kind.add_parser("settlement", help="per bank, per merchant and the gateway's revenue, for a "
                             "business date", parents=[config])
    settle.add_argument("--date", type=_date, metavar="YYYY-MM-DD",
                        help="the business date (default: the latest closed one, else the open one)")
    who = settle.add_mutually_exclusive_group()
    who.add_argument("--bank", help="only what went through this connector")
    who.add_argument("--merchant", help="only this merchant's payments")
    settle.add_argument("--format", choices=FORMATS, default="table")
    settle.add_argument("--output", type=Path, metavar="FILE", help="write here (default: standard output; "
                        "xlsx needs a file)")


def read_settlement_file(path: Path) -> list[SettlementLine]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise Refused(f"cannot read {path}: {e.strerror}") from None
    try:
        return parse_file(data)
    except SettlementFileError as e:
        raise Refused(f"{path}: {e}") from None


def check(args: argparse.Namespace, banks: Any) -> list[SettlementLine]:
    """Refused for a mistake in the command line; the settlement file's lines for `reconcile`."""
    if args.bank is not None and args.bank not in banks:
        raise Refused(f"unknown bank {args.bank!r}; configured: {', '.join(sorted(banks))}")
    if args.command == "reconcile":
        lines = read_settlement_file(args.file)
        wrong = next((line for line in lines if line.business_date != args.date), None)
        if wrong is not None:
            raise Refused(f"{args.file}: a line of business date {wrong.business_date}, not {args.date} "
                          f"(rrn {wrong.rrn or '-'}, stan {wrong.stan})")
        return lines
    if args.format == "xlsx" and args.output is None:
        raise Refused("--format xlsx writes a file: give --output FILE")
    return []


async def run_reconcile(journal: Any, args: argparse.Namespace, lines: list[SettlementLine]) -> reconcile.Result:
    moved = await daybook.day_movements(journal, args.date, args.bank)

    def find(stan: str, rrn: str) -> Any:
        return journal.find_sent(args.bank, stan, rrn=rrn or None)

    return await reconcile.reconcile(args.bank, args.date, lines, moved, find)


async def run_report(journal: Any, args: argparse.Namespace, banks: Collection[str]) -> bytes:
    report = await settlement_report(journal, args.date, banks, bank=args.bank, merchant=args.merchant)
    if report is None:
        raise Refused("the journal has no business day yet: give --date")
    return render(report, args.format)
