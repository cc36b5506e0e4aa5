"""Test helpers: ISO 8583 messages as an acquirer would send them, and a framed client."""

from __future__ import annotations

import socket
import ssl
from datetime import datetime, timezone
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from switch.iso.dialect import Dialect, Message
from switch.iso.framing import Frame, FramedProtocol, Framing

TODAY = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc).timestamp()
VISA = "4111111111111111"
MASTERCARD = "5555555555554444"
DO_NOT_HONOUR = "4000000000000002"
NO_FUNDS = "4000000000009995"
EXPIRED = "4000000000000069"
BLOCKED = "4000000000000622"
LIMITED = "5105105105105100"
YEN = "4000000000003923"
UNKNOWN = "4242424242424242"

# The 1987 code each outcome has, and the 1993 action code it maps to.
CODES_1993 = {"00": "000", "05": "100", "12": "902", "14": "111", "30": "904", "51": "116", "54": "101",
              "61": "121", "62": "104", "94": "913", "N7": "129"}


def code(code87: str, version: int) -> str:
    return code87 if version == 1987 else CODES_1993[code87]


def mti(kind: str, version: int) -> str:
    table = {"auth": ("0100", "1100"), "sale": ("0200", "1200"), "completion": ("0220", "1220"),
             "reversal": ("0400", "1420"), "reversal_repeat": ("0401", "1421"), "network": ("0800", "1804")}
    return table[kind][0 if version == 1987 else 1]


def request(kind: str, version: int, pan: str = VISA, amount: int = 1000, stan: str = "000001",
            rrn: str | None = None, **extra: str) -> Message:
    """A complete card-not-present request as the switch would send it (CVV 123, expiry 3012)."""
    message = {
        "t": mti(kind, version), "2": pan, "3": "000000", "4": f"{amount:012d}", "7": "0615120000",
        "11": stan, "14": "3012", "32": "400001", "37": rrn or f"6166{stan}00", "41": "TERM0001",
        "42": "MERCHANT0000001", "48": "123", "49": "840",
    }
    if version == 1993:
        message["12"] = "260615120000"
    message.update(extra)
    return {k: v for k, v in message.items() if v != ""}


def original_data(original: Message, version: int) -> tuple[str, str]:
    """(field, value) of the original data elements pointing at ``original``."""
    if version == 1987:
        return "90", original["t"] + original["11"] + original["7"] + original["32"].zfill(11) + "0" * 11
    acquirer = original["32"]
    return "56", original["t"] + original["11"] + original["12"] + f"{len(acquirer):02d}{acquirer}"


def reversal(original: Message, version: int, stan: str, repeat: bool = False, by_rrn: bool = False) -> Message:
    """A reversal of ``original`` carrying its identifying fields and a new STAN."""
    message = {k: original[k] for k in ("2", "3", "4", "7", "32", "37", "41", "42", "49", "12") if k in original}
    message["t"] = mti("reversal_repeat" if repeat else "reversal", version)
    message["11"] = stan
    if not by_rrn:
        number, value = original_data(original, version)
        message[number] = value
    return message


def network(version: int, kind: str = "echo", stan: str = "000009") -> Message:
    codes = {"sign_on": ("001", "801"), "sign_off": ("002", "802"), "echo": ("301", "831")}
    field = "70" if version == 1987 else "24"
    return {"t": mti("network", version), "7": "0615120000", "11": stan, field: codes[kind][0 if version == 1987 else 1]}


class IsoClient(FramedProtocol):
    """The switch's side of a link, reduced to send and receive."""

    def __init__(self, dialect: Dialect, framing: Framing) -> None:
        self.dialect = dialect
        self.framing = framing
        self.frames: DeferredQueue = DeferredQueue()
        self.lost: Deferred = Deferred()

    def frameReceived(self, frame: Frame) -> None:
        self.frames.put(frame)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.lost.callback(reason.value)

    def send(self, message: Message, tpdu: bytes | None = None) -> None:
        self.sendFrame(self.dialect.encode(message), tpdu)

    def next_frame(self, timeout: float = 5.0) -> Deferred:
        return self.frames.get().addTimeout(timeout, reactor)

    @inlineCallbacks
    def exchange(self, message: Message, tpdu: bytes | None = None, timeout: float = 5.0):
        self.send(message, tpdu)
        frame = yield self.next_frame(timeout)
        return self.dialect.decode(frame.payload)

    def close(self) -> None:
        if self.transport is not None and self.connected:
            self.transport.abortConnection()


def connect(port: int, dialect: Dialect, framing: Framing) -> Deferred:
    """A connected `IsoClient`."""
    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), IsoClient(dialect, framing))


def blocking_exchange(port: int, framing: Framing, wire: bytes, context: ssl.SSLContext | None = None) -> Frame:
    """Send framed bytes and return the first frame back, without a reactor (run on a thread
    when the bank runs in this process's reactor)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with (context.wrap_socket(raw, server_hostname="localhost") if context else raw) as sock:
            sock.sendall(wire)
            decoder = framing.decoder()
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    raise EOFError("connection closed before an answer")
                for frame in decoder.feed(chunk):
                    return frame
