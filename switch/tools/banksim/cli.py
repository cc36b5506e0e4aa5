"""``banksim``: run a simulated issuer's host on a port, for a switch or an engineer to talk to.

A parent process (a test, the demo) starts it with ``--listen 127.0.0.1:0`` and reads
the line ``LISTENING <port>`` from standard output; everything else, including the
same fact as a ``banksim_listening`` event, is structured JSON logging on standard error.
``banksim ledger --ledger FILE`` reads the books a ``--ledger FILE`` banksim keeps;
``banksim settlement --ledger FILE --date D`` writes its settlement file for a business date.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.internet.task import react
from twisted.python.failure import Failure

from switch.domain.settlementfile import parse_date, render_file
from switch.iso.dialect import DialectError, load_dialect
from switch.iso.framing import FRAMING_NAMES, TPDU_LENGTH, Framing
from switch.observe.logs import configure
from switch.tools.banksim.accounts import DEFAULT_ACCOUNTS, AccountsError, load_accounts
from switch.tools.banksim.codes import CVV_MISMATCH, wire_code
from switch.tools.banksim.faults import Faults
from switch.tools.banksim.ledger import Ledger, LedgerError, read_snapshot
from switch.tools.banksim.server import BankSim, BankSimOptions
from switch.tools.banksim.settlement import read_postings, settlement_lines
from switch.tools.banksim.tls import TlsError, TlsFiles, server_tls_options
from switch.tools.banksim.web import customer_site


def _listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"got {value!r}; expected HOST:PORT such as 127.0.0.1:9601 (port 0 = any free port)")
    return host.strip("[]"), int(port)


def _tpdu(value: str) -> bytes:
    try:
        tpdu = bytes.fromhex(value)
    except ValueError:
        tpdu = b""
    if len(tpdu) != TPDU_LENGTH:
        raise argparse.ArgumentTypeError(f"got {value!r}; expected {TPDU_LENGTH * 2} hex digits such as 6000010000")
    return tpdu


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="banksim",
        description="Simulated ISO 8583 issuer host (see README, banksim). "
                    "'banksim ledger --ledger FILE [--json]' prints a ledger file's balances and postings; "
                    "'banksim settlement --ledger FILE --date YYYY-MM-DD [--output FILE]' writes its settlement file.",
    )
    p.add_argument("--listen", type=_listen_address, required=True, metavar="HOST:PORT",
                   help="address to listen on; port 0 picks a free port, printed as 'LISTENING <port>'")
    p.add_argument("--dialect", required=True, help="shipped dialect name (iso87ascii ...) or a dialect TOML file")
    p.add_argument("--framing", required=True, choices=FRAMING_NAMES, help="length header of each message")
    p.add_argument("--tpdu", nargs="?", const=b"", type=_tpdu, metavar="HEX",
                   help="messages carry a 5-byte TPDU (answers swap source and destination); with HEX, the TPDU "
                        "the acquirer addresses this host with: other destinations are logged as misaddressed")
    p.add_argument("--length-includes-header", action="store_true", help="the length counts its own header bytes")
    p.add_argument("--accounts", type=Path, default=DEFAULT_ACCOUNTS, help="accounts file (default: %(default)s)")
    p.add_argument("--ledger", type=Path, metavar="FILE",
                   help="keep balances, holds, postings and answers in this SQLite file (created if missing), "
                        "so a restarted banksim carries on; default: in memory. Read it with 'banksim ledger'")
    tls = p.add_mutually_exclusive_group(required=True)
    tls.add_argument("--tls-cert", type=Path, metavar="FILE", help="server certificate (PEM); needs --tls-key, --tls-ca")
    tls.add_argument("--plain", action="store_true", help="plain TCP, no TLS (tests and local debugging only)")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="server private key (PEM)")
    p.add_argument("--tls-ca", type=Path, metavar="FILE", help="CA whose client certificates are accepted (PEM)")
    p.add_argument("--response-code-cvv", default=CVV_MISMATCH, metavar="CODE",
                   help="answer to a wrong CVV (default %(default)s; 129 on a 1993 dialect)")
    p.add_argument("--name", default="banksim", help="bank name in logs and traces")
    p.add_argument("--http", type=_listen_address, metavar="HOST:PORT",
                   help="serve the customer page: GET /confirm/<ref> (a page with Approve and Reject buttons), "
                        "POST /confirm/<ref>?decision=approve|reject, GET /pending; "
                        "and the books: GET /ledger, GET /settlement?date=YYYY-MM-DD (the settlement file)")
    p.add_argument("--trace", type=Path, metavar="FILE", help="append a masked link trace (read it with isotrace)")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when standard input closes: a parent that starts banksim (kswitch run) may die by "
                        "SIGKILL; ignore SIGINT (Ctrl-C in the parent's terminal): the parent signs off first, "
                        "then stops banksim with SIGTERM")
    faults = p.add_argument_group("fault injection (all off by default)")
    faults.add_argument("--delay", type=float, default=0.0, metavar="SECONDS", help="wait before every answer")
    faults.add_argument("--drop-ratio", type=float, default=0.0, metavar="R",
                        help="fraction of non-network requests processed but never answered")
    faults.add_argument("--seed", type=int, help="random seed for --drop-ratio (repeatable runs)")
    faults.add_argument("--disconnect-after", type=int, metavar="N",
                        help="close a connection on its Nth message, without answering it")
    faults.add_argument("--garbage-every", type=int, metavar="N", help="replace every Nth answer by an undecodable frame")
    faults.add_argument("--decline-all", metavar="CODE", help="answer every authorization and financial request with CODE")
    p.add_argument("--log-format", choices=("json", "console"), default="json", help="log format on standard error")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


class _ParentWatch(Protocol):
    """Standard input is the parent's pipe: it closes when the parent dies, however it died."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        from twisted.internet import reactor

        if reactor.running:
            reactor.stop()


def _serve(reactor: Any, sim: BankSim, host: str, port: int, tls: TlsFiles | None,
           http: tuple[str, int] | None, exit_with_parent: bool = False) -> Deferred:
    reactor.addSystemEventTrigger("before", "shutdown", sim.close)
    reactor.addSystemEventTrigger("after", "shutdown", sim.ledger.close)
    if exit_with_parent:
        StandardIO(_ParentWatch(), stdout=os.open(os.devnull, os.O_WRONLY), reactor=reactor)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the reactor runs: this replaces Twisted's handler
    if http is not None:
        sim.issuer.confirm_url_base = f"http://{http[0]}:{http[1]}"
        reactor.listenTCP(http[1], customer_site(sim), interface=http[0])

    def ready(listening: Any) -> Deferred:
        print(f"LISTENING {listening.getHost().port}", flush=True, file=sys.stdout)
        return Deferred()

    def failed(failure: Failure) -> Failure:
        print(f"banksim: cannot listen on {host}:{port}: {failure.getErrorMessage()}", file=sys.stderr)
        return Failure(SystemExit(1))

    return sim.listen(port, tls, interface=host).addCallbacks(ready, failed)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ledger"]:
        return ledger_main(argv[1:])
    if argv[:1] == ["settlement"]:
        return settlement_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tls_cert is not None and (args.tls_key is None or args.tls_ca is None):
        parser.error("--tls-cert needs --tls-key and --tls-ca (the CA that issues the switch's client certificates)")
    if args.plain and (args.tls_key is not None or args.tls_ca is not None):
        parser.error("--plain takes no --tls-key or --tls-ca")
    configure(args.log_format, sys.stderr, args.log_level)
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert is not None else None
    try:
        dialect = load_dialect(args.dialect)
        framing = Framing(args.framing, tpdu=args.tpdu is not None, includes_header=args.length_includes_header)
        faults = Faults(args.delay, args.drop_ratio, args.seed, args.disconnect_after, args.garbage_every, args.decline_all)
        faults.check(dialect.version)
        wire_code(args.response_code_cvv, dialect.version)
        options = BankSimOptions(
            name=args.name, cvv_code=args.response_code_cvv, faults=faults, trace=args.trace,
            expected_tpdu=args.tpdu or None, ledger_path=args.ledger,
        )
        accounts = load_accounts(args.accounts)
        if tls is not None:
            server_tls_options(tls)
        ledger = Ledger(accounts, args.ledger)
    except (DialectError, AccountsError, TlsError, ValueError) as e:
        print(f"banksim: {e}", file=sys.stderr)
        return 2

    react(lambda reactor: _serve(reactor, BankSim(reactor, dialect, framing, accounts, options, ledger), *args.listen,
                                 tls, args.http, args.exit_with_parent))
    return 0


def ledger_main(argv: list[str]) -> int:
    """``banksim ledger --ledger FILE [--json]``: balances per account, then every posting (cards masked)."""
    p = argparse.ArgumentParser(prog="banksim ledger", description="Print a banksim ledger file: balances per "
                                "account and every posting (card numbers masked). Safe while banksim runs.")
    p.add_argument("--ledger", type=Path, required=True, metavar="FILE", help="the file given to banksim --ledger")
    p.add_argument("--json", action="store_true", help="the same JSON as GET /ledger")
    args = p.parse_args(argv)
    try:
        book = read_snapshot(args.ledger)
    except LedgerError as e:
        print(f"banksim ledger: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(book, indent=2) + "\n" if args.json else render_ledger(book))
    return 0


def _business_date(value: str) -> str:
    try:
        return parse_date(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def settlement_main(argv: list[str]) -> int:
    """``banksim settlement --ledger FILE --date D [--output FILE]``: the settlement file of business date D."""
    p = argparse.ArgumentParser(prog="banksim settlement", description="Write the settlement file of a business "
                                "date from a ledger file: one CSV line per posting that moved money (README, "
                                "Reconciliation by file). Safe while banksim runs.")
    p.add_argument("--ledger", type=Path, required=True, metavar="FILE", help="the file given to banksim --ledger")
    p.add_argument("--date", type=_business_date, required=True, metavar="YYYY-MM-DD",
                   help="the business date (of each posting as banksim stamped it; else its UTC day)")
    p.add_argument("--output", type=Path, metavar="FILE", help="write here (default: standard output)")
    args = p.parse_args(argv)
    try:
        data = render_file(settlement_lines(read_postings(args.ledger), args.date))
    except LedgerError as e:
        print(f"banksim settlement: {e}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.buffer.write(data)
        return 0
    try:
        args.output.write_bytes(data)
    except OSError as e:
        print(f"banksim settlement: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        return 2
    return 0


def render_ledger(book: dict[str, Any]) -> str:
    """The text form of a ledger snapshot: an accounts table, then a postings table."""
    lines = [f"{'account':<12}  {'card':<20}  {'cur':<3}  {'opening':>12}  {'balance':>12}  {'held':>10}  "
             f"{'available':>12}  open holds"]
    for a in book["accounts"]:
        lines.append(f"{a['account']:<12}  {a['masked_pan']:<20}  {a['currency']:<3}  {a['opening_balance']:>12}  "
                     f"{a['balance']:>12}  {a['held']:>10}  {a['available']:>12}  {len(a['holds'])}")
    lines += [f"books do not add up: {d}" for d in book["discrepancies"]] or ["books add up: every balance and "
                                                                            "held amount equals its postings"]
    anomalies = ", ".join(f"{kind} {count}" for kind, count in book["anomalies"].items()) or "none"
    lines += ["", f"{len(book['postings'])} postings; anomalies: {anomalies}",
              f"{'id':>6}  {'time':<20}  {'kind':<18}  {'amount':>10}  {'cur':<3}  {'card':<20}  {'mti':<4}  "
              f"{'stan':<6}  {'rrn':<12}  {'terminal':<8}  {'auth':<6}  {'orig':>6}  notes"]
    for p in book["postings"]:
        notes = [f"anomaly={p['anomaly']}"] if p["anomaly"] else []
        notes += [f"reversed by #{p['reversed_by']}"] if p["reversed_by"] else []
        notes += [f"closed by #{p['closed_by']}"] if p["closed_by"] else []
        lines.append(
            f"{p['id']:>6}  {p['time']:<20}  {p['kind']:<18}  {p['amount']:>10}  {p['currency'] or '-':<3}  "
            f"{p['masked_pan'] or '-':<20}  {p['mti'] or '-':<4}  {p['stan'] or '-':<6}  {p['rrn'] or '-':<12}  "
            f"{p['terminal'] or '-':<8}  {p['auth_code'] or '-':<6}  {p['original'] or '-':>6}  {'; '.join(notes)}"
            .rstrip()
        )
    return "\n".join(lines) + "\n"
