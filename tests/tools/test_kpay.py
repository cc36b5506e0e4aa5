"""``kpay`` run as a separate process against a test server, exactly as from a shell.

It runs with ``python -S`` (no site-packages), which also proves that kpay and the
blocking client need nothing but the standard library.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.protocols.basic import LineOnlyReceiver

from tests.gateway.conftest import PAN, WEB1_TOKEN

inline = pytest_twisted.inlineCallbacks
ROOT = Path(__file__).resolve().parents[2]


class Collect(ProcessProtocol):
    def __init__(self, stdin: bytes) -> None:
        self.stdin, self.out, self.err = stdin, b"", b""
        self.done: Deferred[tuple[int, str, str]] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        self.done.callback((reason.value.exitCode, self.out.decode(), self.err.decode()))


def kpay(*args: str, token: str | None = WEB1_TOKEN, stdin: bytes = b"") -> Deferred[tuple[int, str, str]]:
    env = {"PATH": "/usr/bin:/bin", "KSWITCH_TOKEN": token} if token else {"PATH": "/usr/bin:/bin"}
    collect = Collect(stdin)
    command = [sys.executable, "-S", str(ROOT / "bin" / "kpay"), *args]
    reactor.spawnProcess(collect, sys.executable, command, env=env, path=str(ROOT))
    return collect.done.addTimeout(30, reactor)


def sale_args(port: int, *extra: str) -> list[str]:
    return [
        "--connect", f"tcp:127.0.0.1:{port}", "--client", "web-1", "authorize",
        "--amount", "1250", "--currency", "USD", "--pan", PAN, "--expiry", "2812", "--cvv", "123",
        "--merchant", "m1", "--store", "s1", *extra,
    ]  # fmt: skip


@inline
def test_ping(server):
    code, out, err = yield kpay("--connect", f"tcp:127.0.0.1:{server.port}", "ping", token=None)
    assert (code, err) == (0, "")
    assert out.startswith(f"pong from tcp:127.0.0.1:{server.port} in ")


@inline
def test_approved_sale_is_printed_readably_without_the_card_number(server):
    code, out, err = yield kpay(*sale_args(server.port, "--order", "shell-1"))
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "APPROVED  12.50 USD"
    assert "411111******1111" in out and "txn_id" in out and "shell-1" in out
    assert PAN not in out


@inline
def test_preauth_with_the_card_number_on_standard_input(server):
    args = sale_args(server.port, "--preauth", "--json")
    args[args.index(PAN)] = "-"
    code, out, _ = yield kpay(*args, stdin=PAN.encode() + b"\n")
    assert code == 0
    answer = json.loads(out)
    assert (answer["ok"], answer["status"]) == (True, "approved")
    [(request, _)] = server.service.calls
    assert request.capture is False and request.order_id.startswith("kpay-")


@inline
def test_declined_exits_1_and_status_shows_the_transaction(server):
    code, out, _ = yield kpay(*sale_args(server.port, "--order", "decline-1", "--json"))
    answer = json.loads(out)
    assert (code, answer["status"], answer["reason"]) == (1, "declined", "insufficient_funds")
    code, out, _ = yield kpay(
        "--connect", f"tcp:127.0.0.1:{server.port}", "--client", "web-1", "status", answer["txn_id"]
    )
    assert code == 0
    assert out.splitlines()[0] == "DECLINED  12.50 USD"


@inline
def test_an_error_answer_is_one_clear_line_and_exit_3(server):
    args = sale_args(server.port)
    args[args.index(PAN)] = "4111111111111112"
    code, out, err = yield kpay(*args)
    assert code == 3
    assert err == "kpay: invalid_request (instrument.pan): card number fails the Luhn check\n"
    assert out == ""


@inline
def test_usage_and_connection_problems_never_show_a_traceback(server, tmp_path):
    no_token = yield kpay(*sale_args(server.port), token=None)
    unreachable = yield kpay("--connect", f"unix:{tmp_path}/nothing.sock", "ping")
    bad_connect = yield kpay("--connect", "bogus", "ping")
    bad_amount = yield kpay("authorize", "--amount", "12.50")
    assert no_token[0] == 2 and "KSWITCH_TOKEN" in no_token[2] and "demo-token-not-for-production" in no_token[2]
    assert unreachable[0] == 4 and unreachable[2].startswith("kpay: cannot connect to unix:")
    assert bad_connect[0] == 2 and "tcp:HOST:PORT" in bad_connect[2]
    assert bad_amount[0] == 2 and "usage:" in bad_amount[2]
    for _, _, err in (no_token, unreachable, bad_connect):
        assert len(err.splitlines()) == 1
    assert all("Traceback" not in err for _, _, err in (no_token, unreachable, bad_connect, bad_amount))


@inline
def test_a_reader_that_goes_away_early_is_no_error_worth_a_traceback(server):
    args = " ".join(f"'{arg}'" for arg in sale_args(server.port))
    shell = f"KSWITCH_TOKEN={WEB1_TOKEN} {sys.executable} -S {ROOT / 'bin' / 'kpay'} {args} | true"
    collect = Collect(b"")
    reactor.spawnProcess(collect, "/bin/sh", ["/bin/sh", "-c", shell], env={"PATH": "/usr/bin:/bin"}, path=str(ROOT))
    code, out, err = yield collect.done.addTimeout(30, reactor)
    assert (code, out, err) == (0, "", "")


class Recorder(LineOnlyReceiver):
    """A switch stand-in that records each request line and answers it ``ok`` with a captured payment."""

    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        request = json.loads(line)
        self.factory.requests.append(request)
        operation = {"txn_id": "T2", "kind": request["op"], "status": "approved", "amount": 400}
        self.sendLine(json.dumps({"id": request["id"], "ok": True, "txn_id": "T1", "status": "captured",
                                  "amount": 1250, "currency": "USD", "operation": operation}).encode())


@inline
def test_lifecycle_commands_send_amount_and_idempotency_key_only_when_given():
    factory = Factory.forProtocol(Recorder)
    factory.requests = []
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    connect = ("--connect", f"tcp:127.0.0.1:{port.getHost().port}", "--client", "web-1")
    try:
        results = [
            (yield kpay(*connect, "capture", "T1", "--amount", "400", "--idempotency-key", "cap-1")),
            (yield kpay(*connect, "refund", "T1")),
            (yield kpay(*connect, "void", "T1", "--idempotency-key", "void-1")),
        ]
    finally:
        yield port.stopListening()
    sent = [{k: v for k, v in r.items() if k != "id"} for r in factory.requests if r["op"] != "hello"]
    assert sent == [
        {"op": "capture", "txn_id": "T1", "amount": 400, "idempotency_key": "cap-1"},
        {"op": "refund", "txn_id": "T1"},
        {"op": "void", "txn_id": "T1", "idempotency_key": "void-1"},
    ]
    assert [code for code, _, _ in results] == [0, 0, 1]  # a void answered "captured" is not reversed
