"""``kswitch cutover BANK|--all [--json]``: ask the running switch to end a business day.

Why over the admin server and not the journal (as ``kswitch saf`` does): a cutover must
tell the bank, wait for the payments in flight and reconcile, which only the process
holding the links can do.  The admin server serves it to loopback and Unix-socket clients
(`switch.ops.admin.operator_allowed`).  Exit status: 0 when every day balanced (or the bank
does not reconcile by message), 1 when one is out of balance or its reconciliation failed,
2 for an error (one line on stderr): unknown bank, switch not running, cutover refused.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
from typing import Any
from urllib.parse import urlencode

from switch.gateway.listen import split_description

TIMEOUT = 300.0
"""Seconds to wait for the switch's answer: each cutover waits for its payments in flight and the bank."""


class CutoverError(Exception):
    """Why the switch could not be asked, or what it refused, in one line."""


def add_parser(sub: Any, config: argparse.ArgumentParser) -> None:
    p = sub.add_parser("cutover", help="close a bank's business date, open the next and reconcile (running switch)",
                       parents=[config])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("bank", nargs="?", help="the connector's name")
    which.add_argument("--all", action="store_true", help="every connector, one after the other")
    p.add_argument("--json", action="store_true", help="JSON: an object for BANK, an array for --all")
    p.add_argument("--admin", metavar="HOST:PORT|unix:PATH",
                   help="where the switch's admin server listens (default: the config's [admin] listen)")


def admin_address(description: str) -> tuple[str, str | int]:
    """("tcp", host, port) or ("unix", path) of a Twisted server description such as tcp:9583:interface=127.0.0.1."""
    kind, *parts = split_description(description)
    options = dict(part.partition("=")[::2] for part in parts if "=" in part)
    positional = [part for part in parts if "=" not in part]
    if kind == "unix":
        path = options.get("address") or (positional[0] if positional else "")
        if path:
            return "unix", path
    elif kind in ("tcp", "tcp6"):
        port = options.get("port") or (positional[0] if positional else "")
        if port.isdigit() and int(port) > 0:
            host = options.get("interface", "127.0.0.1")
            return host if host not in ("", "0.0.0.0", "::") else "127.0.0.1", int(port)
    raise CutoverError(f"cannot reach an admin server listening on {description!r}; give --admin HOST:PORT")


def _option_address(text: str) -> tuple[str, str | int]:
    if text.startswith("unix:"):
        return "unix", text[5:]
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not host:
        raise CutoverError(f"--admin: expected HOST:PORT or unix:PATH, got {text!r}")
    return host, int(port)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def request_cutover(address: tuple[str, str | int], bank: str | None, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """POST /cutover to the running switch; its results, or CutoverError with the switch's reason."""
    host, port = address
    conn = (_UnixConnection(str(port), timeout) if host == "unix"
            else http.client.HTTPConnection(host, int(port), timeout=timeout))
    query = urlencode({"bank": bank} if bank is not None else {"all": "1"})
    where = f"{host}:{port}"
    try:
        conn.request("POST", f"/cutover?{query}")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as e:
        raise CutoverError(f"cannot reach the switch's admin server at {where}: {e}") from None
    finally:
        conn.close()
    try:
        doc = json.loads(body)
    except ValueError:
        raise CutoverError(f"the admin server at {where} answered HTTP {response.status} without JSON") from None
    if response.status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        reason = doc.get("error") if isinstance(doc, dict) else None
        raise CutoverError(f"cutover refused: {reason or f'HTTP {response.status}'}")
    return doc["results"]


def run(admin_listen: str, args: argparse.Namespace) -> tuple[int, list[str]]:
    """(exit status, output lines); CutoverError for an error."""
    address = _option_address(args.admin) if args.admin else admin_address(admin_listen)
    results = request_cutover(address, None if args.all else args.bank)
    balanced = all(r.get("reconciliation") in ("in_balance", "not_supported") for r in results)
    if args.json:
        lines = [json.dumps(results if args.all else results[0], sort_keys=True)]
    else:
        lines = [f"{r['bank']}: closed {r['closed']}, opened {r['opened']}, reconciliation {r['reconciliation']}"
                 + (f" ({r['exceptions']} exception(s))" if r.get("exceptions") else "") for r in results]
    return (0 if balanced else 1), lines
