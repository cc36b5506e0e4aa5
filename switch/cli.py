"""``kswitch``: run the switch, explain routing, check a config, operate the SAF queue, cut over a day,
reconcile with a bank's file and report.

Every command exits with one clear line on error (config file, key, expectation) and
never a traceback: operators read these at 3 a.m.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, NoReturn, Sequence

import structlog

from switch.engine.router import RouteQuery
from switch.heap import HeapTrim, freeze_startup_heap
from switch.iso.dialect import DialectError
from switch.libc import c_heap_trim
from switch.observe import logs
from switch.observe.logchild import LogChild
from switch.ops import cutover, riskadmin, settlementcli
from switch.ops.config import DEFAULT_CONFIG, SwitchConfig, load_config
from switch.ops.settings import ConfigError

log = structlog.get_logger("kswitch.switch")

SAF_STATES = ("queued", "dead", "done", "dropped")
LEASE_LOST_EXIT = 3
"""`kswitch run`'s exit status when it stopped itself because its journal's lease was no longer its own (taken over,
or not renewed in time): not 0, so a supervisor that restarts a failed service restarts it."""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line on stderr (exit 2), naming where to find help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _config_option() -> argparse.ArgumentParser:
    """``--config`` for every level, so it may come before or after the subcommand."""
    option = argparse.ArgumentParser(add_help=False)
    option.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                        help=f"config file (default: {DEFAULT_CONFIG})")
    return option


def _saf_states(text: str) -> list[str]:
    states = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [state for state in states if state not in SAF_STATES]
    if unknown or not states:
        raise argparse.ArgumentTypeError(f"expected {', '.join(SAF_STATES)} (comma list allowed), got {text!r}")
    return states


def _whole_number(expected: str) -> Callable[[str], int]:
    """An argparse type for a number from 1 up, refused as ``expected ..., got '...'``."""

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return int(text)

    return parse


_saf_id = _whole_number("a store-and-forward item id (a number from saf list)")


def _parser() -> argparse.ArgumentParser:
    config = _config_option()
    p = _Parser(prog="kswitch", description="kswitch: a bank integration message switch", parents=[config])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the switch", parents=[config])
    sub.add_parser("check-config", help="validate a config file and exit", parents=[config])

    route = sub.add_parser("route", help="explain which connector a payment would go to (sends nothing)",
                           parents=[config])
    route.add_argument("--pan", default="", help="card number (only its first 8 digits are used)")
    route.add_argument("--amount", type=int, required=True, help="amount in minor units")
    route.add_argument("--currency", required=True)
    route.add_argument("--merchant", default="")
    route.add_argument("--bank", help="the customer's chosen bank code")
    route.add_argument("--instrument", default="card", choices=("card", "bank_account", "wallet"))

    saf = sub.add_parser("saf", help="store-and-forward queue: list, retry or drop items", parents=[config])
    saf_sub = saf.add_subparsers(dest="action", required=True)
    lst = saf_sub.add_parser("list", help="list items (dead letters by default)", parents=[config])
    lst.add_argument("--state", action="append", type=_saf_states, metavar="STATE[,STATE]",
                     help=f"{'|'.join(SAF_STATES)}; repeat or give a comma list (default: dead)")
    lst.add_argument("--limit", type=_whole_number("a positive whole number"), default=100, help="at most this many items (default: %(default)s)")
    lst.add_argument("--connector")
    lst.add_argument("--json", action="store_true")
    retry = saf_sub.add_parser("retry", help="put a dead item back in its queue", parents=[config])
    retry.add_argument("saf_id", type=_saf_id)
    retry.add_argument("--operator", required=True)
    drop = saf_sub.add_parser("drop", help="give up on an item (kept as dropped, with who and why)",
                              parents=[config])
    drop.add_argument("saf_id", type=_saf_id)
    drop.add_argument("--operator", required=True)
    drop.add_argument("--reason", required=True)

    riskadmin.add_parser(sub, config)
    cutover.add_parser(sub, config)
    settlementcli.add_parsers(sub, config)

    keys = sub.add_parser("keys", help="PAN encryption keys: usage per key id, re-encrypt under the current key",
                          parents=[config])
    keys.add_argument("action", choices=("usage", "rewrap"))

    schema = sub.add_parser("config", help="print the configuration reference (Markdown tables) from the schema")
    schema.add_argument("action", choices=("reference",))

    journal = sub.add_parser("journal", help="copy the whole journal to another backend (switch stopped)",
                             parents=[config])
    journal.add_argument("action", choices=("copy",))
    journal.add_argument("--to", type=Path, required=True, metavar="CONFIG",
                         help="a config file whose [journal] names the empty target")
    return p


def _route(cfg: SwitchConfig, args: argparse.Namespace) -> int:
    from switch.domain.cardcheck import scheme

    pan = args.pan.replace(" ", "")
    q = RouteQuery(instrument=args.instrument, amount=args.amount, currency=args.currency.upper(),
                   merchant_id=args.merchant, bin8=pan[:8], scheme=scheme(pan) if pan else None, bank=args.bank)
    decision = cfg.router.route(q)
    _emit(decision.explanation, *(
        f"  {name}: dialect {cfg.banks[name].profile.dialect.name}, framing {cfg.banks[name].options.framing.header}, "
        f"links {', '.join(f'{link.host}:{link.port}' for link in cfg.banks[name].options.links)}"
        for name in decision.connectors
    ))
    return 0 if decision.connectors else 2


def _run(cfg: SwitchConfig) -> int:
    from twisted.internet import reactor
    from twisted.internet.error import ReactorNotRunning

    from switch.app import Switch

    lines = logs.configure(cfg.log_format, level=cfg.log_level,  # type: ignore[arg-type]
                           call_later=reactor.callLater, start_child=LogChild)
    switch = Switch(cfg, reactor)
    status = {"code": 0}
    trim = HeapTrim(reactor, c_heap_trim())

    def started(_: object) -> None:
        freeze_startup_heap()
        trim.start()

    def stop_reactor(_: object) -> None:
        trim.stop()
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # already stopping: the switch stopped itself (lease lost) or a signal came first

    def failed(f: Any) -> None:
        sys.stderr.write(f"kswitch: cannot start: {f.getErrorMessage()}\n")
        status["code"] = 1
        switch.stop().addBoth(stop_reactor)

    def shutdown(signum: int, _frame: Any) -> None:
        # Under tox, Ctrl-C reaches this process and tox, which sends SIGINT again later: the
        # first signal starts the stop, a repeat is logged and changes nothing.
        name = signal.Signals(signum).name
        reactor.callFromThread(lambda: switch.stop(reason=name).addBoth(stop_reactor))

    reactor.callWhenRunning(lambda: switch.start().addCallbacks(started, failed))
    # Twisted's own handlers stay installed (SIGCHLD reaps the simulators: without it their end
    # can go unnoticed and the stop waits out its bound); SIGINT and SIGTERM are ours, replaced
    # once the reactor runs, after Twisted installed its handlers.
    reactor.callWhenRunning(signal.signal, signal.SIGTERM, shutdown)
    reactor.callWhenRunning(signal.signal, signal.SIGINT, shutdown)
    reactor.callWhenRunning(signal.signal, signal.SIGHUP,
                            lambda _signum, _frame: reactor.callFromThread(switch.reload_risk))
    try:
        reactor.run()
    finally:
        lines.close()
    return LEASE_LOST_EXIT if switch.lease_lost is not None else status["code"]


def _emit(*lines: str) -> None:
    """The command's own output (not a log): standard output, one line each."""
    sys.stdout.write("".join(f"{line}\n" for line in lines))


def _with_journal(cfg: SwitchConfig, work: Callable[[Any], Awaitable[list[str] | tuple[int, list[str]]]]) -> int:
    """Open the configured journal beside (or instead of) a running switch, run ``work``, close it,
    then write the lines ``work`` returned (with its exit status, when it gives one): nothing is
    written to a terminal from the reactor.

    A refusal from the journal is one line on stderr: exit 2 for the operator's mistake (no such
    item, wrong state, invalid value), 1 for anything else (keys, database)."""
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    from switch.journal.errors import InvalidRecord, JournalError, SafItemNotFound
    from switch.journal.journal import open_journal
    from switch.journal.refusals import SafStateError

    logs.configure("json", level="warning")

    output: list[str] = []
    refused: list[tuple[int, str]] = []
    status = [0]

    async def run(reactor: Any) -> None:
        try:
            journal = await open_journal(cfg.journal, reactor)
            try:
                done = await work(journal)
            finally:
                await journal.close()
            status[0], lines = done if isinstance(done, tuple) else (0, done)
            output.extend(lines)
        except (SafItemNotFound, SafStateError, InvalidRecord, settlementcli.Refused) as e:
            refused.append((2, str(e)))
        except JournalError as e:
            refused.append((1, str(e)))

    try:
        task.react(lambda reactor: ensureDeferred(run(reactor)))
    except SystemExit as e:  # react ends the process's reactor by raising SystemExit, 0 on success
        code = int(e.code or 0) or status[0]
    else:
        code = status[0]
    _emit(*output)
    if refused:
        code, message = refused[0]
        sys.stderr.write(f"kswitch: {message}\n")
    return code


def _saf(cfg: SwitchConfig, args: argparse.Namespace) -> int:
    from switch.journal.models import SafState

    async def work(journal: Any) -> list[str]:
        if args.action == "retry":
            item = await journal.saf_retry(args.saf_id, operator=args.operator)
            return [f"SAF item {item.saf_id} is {item.state.value} again; the running switch sends it next"]
        if args.action == "drop":
            item = await journal.saf_drop(args.saf_id, operator=args.operator, reason=args.reason)
            return [f"SAF item {item.saf_id} dropped by {args.operator}"]
        states = {SafState(state) for group in (args.state or [["dead"]]) for state in group}
        items = await journal.saf_list(connector=args.connector, states=states, limit=args.limit)
        rows = [{"saf_id": i.saf_id, "connector": i.connector, "txn_id": i.txn_id, "kind": i.kind.value,
                 "state": i.state.value, "attempts": i.attempts, "max_attempts": i.max_attempts,
                 "enqueued_at": i.enqueued_at.isoformat(), "next_due_at": i.next_due_at.isoformat(),
                 "last_error": i.last_error, "last_response_code": i.last_response_code,
                 "state_reason": i.state_reason} for i in items]
        if args.json:
            return [json.dumps(rows, indent=2)]
        return [f"{r['saf_id']:>6} {r['connector']:<12} {r['kind']:<9} {r['state']:<8} "
                f"{r['attempts']}/{r['max_attempts']} {r['txn_id']} {r['state_reason'] or r['last_error'] or ''}"
                for r in rows] + [f"{len(rows)} item(s)" + (f" (--limit {args.limit} reached)"
                                                             if len(rows) == args.limit else "")]

    return _with_journal(cfg, work)


def _keys(cfg: SwitchConfig, args: argparse.Namespace) -> int:
    async def work(journal: Any) -> list[str]:
        if args.action == "rewrap":
            await journal.rewrap_cards()
        usage = await journal.key_usage()
        current = journal.vault.current_key_id
        return [f"{key_id:<16} {count:>10} stored card(s){'  (current)' if key_id == current else ''}"
                for key_id, count in sorted(usage.items())]

    return _with_journal(cfg, work)


def _reconcile(cfg: SwitchConfig, args: argparse.Namespace) -> int:
    from switch.ops.reconcile import render_text

    lines = settlementcli.check(args, cfg.banks)

    async def work(journal: Any) -> tuple[int, list[str]]:
        result = await settlementcli.run_reconcile(journal, args, lines)
        shown = [json.dumps(result.as_dict(), indent=2)] if args.json else render_text(result)
        return (0 if result.clean else 1), shown

    return _with_journal(cfg, work)


def _report(cfg: SwitchConfig, args: argparse.Namespace) -> int:
    settlementcli.check(args, cfg.banks)
    rendered: list[bytes] = []

    async def work(journal: Any) -> list[str]:
        rendered.append(await settlementcli.run_report(journal, args, cfg.banks))
        return []

    code = _with_journal(cfg, work)
    if code or not rendered:
        return code
    if args.output is None:
        sys.stdout.buffer.write(rendered[0])
        return 0
    try:
        args.output.write_bytes(rendered[0])
    except OSError as e:
        raise settlementcli.Refused(f"cannot write {args.output}: {e.strerror}") from None
    return 0


def _journal_copy(cfg: SwitchConfig, args: argparse.Namespace) -> int:
    from switch.journal.errors import JournalError
    from switch.journal.transfer import copy_journal

    target = load_config(args.to).journal
    try:
        report = copy_journal(cfg.journal, target)
    except JournalError as e:
        sys.stderr.write(f"kswitch: journal copy refused: {e}\n")
        return 1
    _emit(f"copied journal from {cfg.journal.backend} to {target.backend}: {report}")
    return 0


def _cutover(cfg: SwitchConfig, args: argparse.Namespace) -> int:
    try:
        code, lines = cutover.run(cfg.admin_listen, args)
    except cutover.CutoverError as e:
        sys.stderr.write(f"kswitch: {e}\n")
        return 2
    _emit(*lines)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config":
        from switch.ops.reference import markdown

        sys.stdout.write(markdown())
        return 0
    try:
        cfg = load_config(getattr(args, "config", DEFAULT_CONFIG))
    except (ConfigError, DialectError) as e:
        sys.stderr.write(f"kswitch: {e}\n")
        return 2
    if args.command == "check-config":
        _emit(f"{cfg.file}: OK ({len(cfg.banks)} connectors, {len(cfg.router.rules)} routes)")
        return 0
    if args.command == "route":
        return _route(cfg, args)
    if args.command == "saf":
        return _saf(cfg, args)
    if args.command == "keys":
        return _keys(cfg, args)
    if args.command == "risk":
        return _with_journal(cfg, lambda journal: riskadmin.run(journal, args, cfg.risk))
    if args.command == "journal":
        return _journal_copy(cfg, args)
    if args.command == "cutover":
        return _cutover(cfg, args)
    if args.command in ("reconcile", "report"):
        try:
            return (_reconcile if args.command == "reconcile" else _report)(cfg, args)
        except settlementcli.Refused as e:
            sys.stderr.write(f"kswitch: {e}\n")
            return 2
    return _run(cfg)


if __name__ == "__main__":
    sys.exit(main())
