"""``kpay``: talk to a running switch from the shell (payments by hand, smoke tests, scripts).

Exit status: 0 answered (authorize: approved; capture, refund: the operation approved;
void: reversed); 1 answered but not that (declined, failed, timeout; a void still
queued); 2 usage error; 3 the switch answered with an error; 4 the switch could not be
reached or the connection broke.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

from switch.domain.currency import by_alpha
from switch.gateway.client import DEFAULT_CONNECT, BlockingClient, KSwitchConnectionError, KSwitchError, parse_connect

EXIT_OK, EXIT_NOT_APPROVED, EXIT_USAGE, EXIT_ERROR_ANSWER, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_BROKEN_PIPE = 128 + 13
DEMO_TOKEN_HINT = "the default configuration's demo client uses demo-token-not-for-production"
TRANSACTION_ORDER = (
    "txn_id", "status", "reason", "response_code", "auth_code", "rrn", "stan", "connector",
    "merchant_id", "store_id", "order_id", "masked_pan",
)  # fmt: skip


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--connect",
        default=argparse.SUPPRESS,
        metavar="tcp:HOST:PORT|unix:PATH",
        help=f"where the switch listens (default {DEFAULT_CONNECT})",
    )
    common.add_argument("--client", default=argparse.SUPPRESS, help="client name for hello (default demo)")
    common.add_argument("--token", default=argparse.SUPPRESS, help="client token (default: $KSWITCH_TOKEN)")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="seconds to wait (default 60)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON answer")

    parser = argparse.ArgumentParser(
        prog="kpay",
        parents=[common],
        description="Send requests to a kswitch socket API.",
        epilog="Exit status: 0 ok/approved (void: reversed), 1 not approved (void: still queued), 2 usage, "
               "3 error answer, 4 switch unreachable.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    authorize = commands.add_parser("authorize", parents=[common], help="authorize or sell with a card")
    authorize.add_argument("--amount", type=int, required=True, help="amount in minor units, e.g. 1250 for 12.50 USD")
    authorize.add_argument("--currency", required=True, help="ISO 4217 alpha code, e.g. USD")
    instrument = authorize.add_mutually_exclusive_group(required=True)
    instrument.add_argument("--pan", help="card number, or - to read it from standard input")
    instrument.add_argument("--account", metavar="BANK:ACCOUNT",
                            help="a bank account, e.g. ABA:000123456789 (- reads it from standard input)")
    instrument.add_argument("--wallet", metavar="PROVIDER:WALLET_ID", help="a wallet, e.g. TRUEMONEY:0812345678")
    authorize.add_argument("--expiry", help="YYMM (cards)")
    authorize.add_argument("--account-type", choices=("savings", "checking"), help="bank accounts: from-account type")
    authorize.add_argument("--holder-id", help="bank accounts: the account holder's id at the bank")
    authorize.add_argument("--cvv")
    authorize.add_argument("--merchant", required=True)
    authorize.add_argument("--store", required=True)
    authorize.add_argument("--order", help="order id (default: generated)")
    authorize.add_argument("--preauth", action="store_true", help="pre-authorize only (0100) instead of a sale")
    authorize.add_argument("--bank", help="force this connector")
    authorize.add_argument("--idempotency-key", help="repeat a request safely: same key, same answer")

    for op, help_text, with_amount in (
        ("capture", "capture an approved pre-authorization (default: all of it)", True),
        ("void", "cancel an approved payment not yet captured", False),
        ("refund", "give back captured money (default: all that is left)", True),
    ):
        lifecycle = commands.add_parser(op, parents=[common], help=help_text)
        lifecycle.add_argument("txn_id", help="the txn_id of the payment (from authorize)")
        if with_amount:
            lifecycle.add_argument("--amount", type=int, help="amount in minor units")
        lifecycle.add_argument("--idempotency-key", help="repeat the request safely: same key, same answer")

    status = commands.add_parser("status", parents=[common], help="show a transaction, or an order's latest payment")
    status.add_argument("txn_id", nargs="?", help="the transaction's id; or give --order and --merchant")
    status.add_argument("--order", help="the order id given to authorize")
    status.add_argument("--merchant", help="the merchant of --order")

    commands.add_parser("ping", parents=[common], help="check that the switch answers")
    return parser


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "connect": getattr(args, "connect", DEFAULT_CONNECT),
        "client": getattr(args, "client", "demo"),
        "token": getattr(args, "token", None) or os.environ.get("KSWITCH_TOKEN"),
        "timeout": getattr(args, "timeout", 60.0),
        "json": getattr(args, "json", False),
    }


def _client(settings: dict[str, Any], authenticate: bool) -> BlockingClient:
    try:
        parse_connect(settings["connect"])
    except ValueError as e:
        raise UsageError(f"--connect: {e}") from None
    credentials = {}
    if authenticate:
        if not settings["token"]:
            raise UsageError(f"no token: pass --token or set KSWITCH_TOKEN ({DEMO_TOKEN_HINT})")
        credentials = {"client": settings["client"], "token": settings["token"]}
    return BlockingClient.from_description(settings["connect"], timeout=settings["timeout"], **credentials)


def _read_pan(value: str, stdin: TextIO) -> str:
    return stdin.readline().strip() if value == "-" else value


def _order_id() -> str:
    return f"kpay-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _instrument(args: argparse.Namespace, stdin: TextIO) -> dict[str, Any]:
    """A bank account or wallet instrument from ``BANK:ACCOUNT`` / ``PROVIDER:WALLET_ID``."""
    if args.wallet is not None:
        provider, _, wallet_id = args.wallet.partition(":")
        return {"type": "wallet", "provider": provider, "wallet_id": wallet_id}
    bank, _, account = _read_pan(args.account, stdin).partition(":")
    instrument = {"type": "bank_account", "bank": bank, "account": account}
    for key, value in (("account_type", args.account_type), ("holder_id", args.holder_id)):
        if value is not None:
            instrument[key] = value
    return instrument


def _authorize(args: argparse.Namespace, client: BlockingClient, stdin: TextIO) -> dict[str, Any]:
    if args.pan is None:
        fields = {"merchant_id": args.merchant, "store_id": args.store, "order_id": args.order or _order_id(),
                  "amount": args.amount, "currency": args.currency, "capture": not args.preauth,
                  "instrument": _instrument(args, stdin)}
        fields.update((k, v) for k, v in (("bank", args.bank), ("idempotency_key", args.idempotency_key)) if v)
        return client.call("authorize", **fields)
    if args.expiry is None:
        raise UsageError("--pan needs --expiry YYMM")
    return client.authorize(
        merchant_id=args.merchant,
        store_id=args.store,
        order_id=args.order or _order_id(),
        amount=args.amount,
        currency=args.currency,
        pan=_read_pan(args.pan, stdin),
        expiry=args.expiry,
        cvv=args.cvv,
        capture=not args.preauth,
        bank=args.bank,
        idempotency_key=args.idempotency_key,
    )


def _lifecycle(args: argparse.Namespace, client: BlockingClient) -> dict[str, Any]:
    if getattr(args, "amount", None) is not None and args.amount <= 0:
        raise UsageError("--amount: expected a positive amount in minor units")
    options: dict[str, Any] = {"idempotency_key": args.idempotency_key}
    if args.command != "void":
        options["amount"] = args.amount
    return getattr(client, args.command)(args.txn_id, **options)


def _status(args: argparse.Namespace, client: BlockingClient) -> dict[str, Any]:
    if args.order is None and args.merchant is None and args.txn_id is not None:
        return client.status(args.txn_id)
    if args.txn_id is not None or args.order is None or args.merchant is None:
        raise UsageError("status takes a TXN_ID, or --order ORDER_ID with --merchant MERCHANT_ID")
    return client.status_by_order(args.merchant, args.order)


def _succeeded(command: str, answer: dict[str, Any]) -> bool:
    if command == "authorize":
        return answer.get("status") == "approved"
    if command == "void":
        return answer.get("status") == "reversed"
    if command in ("capture", "refund"):
        return (answer.get("operation") or {}).get("status") == "approved"
    return True


def _money(answer: dict[str, Any], currency_code: Any) -> str:
    currency = by_alpha(currency_code or "")
    amount = answer.get("amount")
    return currency.format(amount) if currency and isinstance(amount, int) else ""


def _format_transaction(answer: dict[str, Any]) -> str:
    money = _money(answer, answer.get("currency"))
    headline = "  ".join(part for part in (str(answer.get("status", "")).upper(), money) if part)
    keys = [key for key in TRANSACTION_ORDER if answer.get(key) is not None]
    keys += sorted(key for key in answer if key not in TRANSACTION_ORDER and key not in ("amount", "currency"))
    width = max((len(key) for key in keys), default=0)
    lines = [headline]
    for key in keys:
        value = answer[key]
        if isinstance(value, dict):  # the operation a capture, void or refund made
            lines += [f"  {key}:", *_operation(value, answer.get("currency"))]
        elif isinstance(value, list) and value and all(isinstance(entry, dict) for entry in value):
            lines.append(f"  {key}:")
            for entry in value:
                lines += _operation(entry, answer.get("currency"))
        else:
            lines.append(f"  {key:<{width}}  {value}")
    return "\n".join(lines)


def _operation(operation: dict[str, Any], currency: Any) -> list[str]:
    """``KIND STATUS  amount`` and the operation's other fields, indented under the payment."""
    head = " ".join(str(operation.get(key, "")).upper() for key in ("kind", "status")).strip()
    rest = [key for key in operation if key not in ("kind", "status", "amount") and operation[key] is not None]
    width = max((len(key) for key in rest), default=0)
    money = _money(operation, currency)
    return [f"    {head}  {money}".rstrip()] + [f"      {key:<{width}}  {operation[key]}" for key in rest]


def _run(argv: Sequence[str] | None, stdout: TextIO, stdin: TextIO) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    started = time.monotonic()
    with _client(settings, authenticate=args.command != "ping") as client:
        if args.command == "ping":
            answer = client.ping()
        elif args.command == "status":
            answer = _status(args, client)
        elif args.command in ("capture", "void", "refund"):
            answer = _lifecycle(args, client)
        else:
            answer = _authorize(args, client, stdin)
    elapsed_ms = (time.monotonic() - started) * 1000
    if settings["json"]:
        print(json.dumps({"ok": True, **answer}, indent=2, sort_keys=True), file=stdout)
    elif args.command == "ping":
        print(f"pong from {settings['connect']} in {elapsed_ms:.1f} ms", file=stdout)
    else:
        print(_format_transaction(answer), file=stdout)
    return EXIT_OK if _succeeded(args.command, answer) else EXIT_NOT_APPROVED


def _fail(message: str, code: int, stderr: TextIO) -> int:
    print(f"kpay: {message}", file=stderr)
    return code


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point; never shows a traceback for a usage, answer or connection problem."""
    try:
        code = run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``kpay … | head``): leave quietly, as a SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    sys.exit(code)


def run(
    argv: Sequence[str] | None = None,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
    stdin: TextIO = sys.stdin,
) -> int:
    """``main`` without exiting, for tests and embedding."""
    json_output = argv is not None and "--json" in argv
    try:
        return _run(argv, stdout, stdin)
    except UsageError as e:
        return _fail(str(e), EXIT_USAGE, stderr)
    except KSwitchConnectionError as e:
        return _fail(e.message, EXIT_UNREACHABLE, stderr)
    except KSwitchError as e:
        if json_output:
            error = {"code": e.code, "field": e.field, "message": e.message}
            print(json.dumps({"ok": False, "error": error}, indent=2, sort_keys=True), file=stdout)
        where = f" ({e.field})" if e.field else ""
        return _fail(f"{e.code}{where}: {e.message}", EXIT_ERROR_ANSWER, stderr)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, stderr)
