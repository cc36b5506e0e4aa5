"""``isodump``: decode ISO 8583 messages from hex, masked, for people and for scripts.

Integration engineers paste hex from a bank's specification, a log or a capture;
what they need back is every field with its number and name, card data masked (the
output ends up in tickets and mails, so there is deliberately no way to unmask),
and, when the hex is wrong, one line saying what and where, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from dataclasses import dataclass
from typing import Iterator

from switch.iso.dialect import Dialect, DialectError, Message, MessageError, load_dialect
from switch.iso.framing import FRAMING_NAMES, Framing, FramingError
from switch.iso.masking import mask_message

_HEX = frozenset(string.hexdigits)


class DumpError(ValueError):
    """The input cannot be dumped; the message says what is wrong and where."""


@dataclass(frozen=True)
class Dumped:
    """One decoded, masked message and the TPDU that came with it, if any."""

    message: Message
    tpdu: bytes | None = None


def parse_hex(text: str, dialect: Dialect | None = None) -> bytes:
    """The message bytes from hex digits; whitespace anywhere is ignored.

    With a dialect whose MTI is text (ASCII), an input that starts with four decimal
    digits whose hex reading is not an ASCII MTI (``0100...`` rather than
    ``30313030...``) is the message as printed, the way bank specifications and the
    pyiso8583 documentation show ASCII messages: its characters are the bytes.
    """
    digits = "".join(text.split())
    if not digits:
        raise DumpError("no input: expected the message as hex digits (argument or standard input)")
    for position, char in enumerate(digits):
        if char not in _HEX:
            raise DumpError(
                f"not hex: {char!r} at hex digit {position} (byte offset {position // 2}); "
                "isodump reads hex digits only, not raw ASCII or binary"
            )
    if dialect is not None and _printed_text_message(digits, dialect):
        return digits.encode(dialect.spec["t"]["data_enc"])
    if len(digits) % 2:
        raise DumpError(f"odd number of hex digits ({len(digits)}): the last byte is incomplete")
    return bytes.fromhex(digits)


def _printed_text_message(digits: str, dialect: Dialect) -> bool:
    charset = dialect.spec["t"]["data_enc"]
    if charset == "b" or not digits[:4].isdigit():
        return False
    try:
        return not bytes.fromhex(digits[:8]).decode(charset).isdigit()
    except (ValueError, UnicodeDecodeError):
        return True


def _decode(dialect: Dialect, payload: bytes, start: int) -> Message:
    try:
        return dialect.decode(payload)
    except MessageError as e:
        where = [f"field {e.field}"] if e.field is not None else []
        if e.offset is not None:
            where.append(f"byte offset {start + e.offset}")
        raise DumpError(f"{e.reason} ({', '.join(where)})" if where else e.reason) from None


def _frames(data: bytes, framing: Framing) -> Iterator[tuple[int, bytes, bytes | None]]:
    """(offset of the payload in the input, payload, TPDU) for each frame; the input must end on a frame."""
    consumed = 0
    frames = framing.decoder().feed(data)
    while True:
        try:
            frame = next(frames, None)
        except FramingError as e:
            raise DumpError(f"bad length header at byte offset {consumed}: {e}") from None
        if frame is None:
            break
        start = consumed + framing.header_length + (len(frame.tpdu) if frame.tpdu is not None else 0)
        consumed = start + len(frame.payload)
        if frame.payload:
            yield start, frame.payload, frame.tpdu
    rest = len(data) - consumed
    if rest >= framing.header_length:
        raise DumpError(
            f"truncated frame at byte offset {consumed}: its {framing.header} length header announces more "
            f"than the {rest - framing.header_length} bytes that follow"
        )
    if rest:
        raise DumpError(f"truncated length header at byte offset {consumed}: {rest} of {framing.header_length} bytes")


def dump(data: bytes, dialect: Dialect, framing: Framing | None = None) -> list[Dumped]:
    """Decode and mask the message (or, with a framing, every framed message) in ``data``."""
    if framing is None:
        return [Dumped(mask_message(_decode(dialect, data, 0), dialect))]
    dumped = [Dumped(mask_message(_decode(dialect, payload, start), dialect), tpdu)
              for start, payload, tpdu in _frames(data, framing)]
    if not dumped:
        raise DumpError("no message: the input holds only keep-alive frames")
    return dumped


def _field_order(message: Message) -> list[str]:
    return sorted((n for n in message if n != "t"), key=int)


def as_json(item: Dumped) -> str:
    doc: dict[str, object] = {"mti": item.message["t"]}
    if item.tpdu is not None:
        doc["tpdu"] = item.tpdu.hex()
    doc["fields"] = {n: item.message[n] for n in _field_order(item.message)}
    return json.dumps(doc)


def as_text(item: Dumped, dialect: Dialect) -> str:
    lines = []
    if item.tpdu is not None:
        lines.append(f"{'TPDU':>4}  {'Transport Protocol Data Unit':<44} {item.tpdu.hex()}")
    lines.append(f"{'MTI':>4}  {dialect.field_name('t'):<44} {item.message['t']}")
    for n in _field_order(item.message):
        lines.append(f"{n:>4}  {dialect.field_name(n):<44} {item.message[n]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="isodump",
        description="Decode an ISO 8583 message given as hex (argument or standard input); card data is masked.",
    )
    parser.add_argument("--dialect", required=True, help="shipped dialect name (iso87ascii ...) or a dialect TOML file")
    parser.add_argument("--framing", choices=FRAMING_NAMES, help="the input starts with this length header")
    parser.add_argument("--tpdu", action="store_true", help="a 5-byte TPDU follows the length header (needs --framing)")
    parser.add_argument("--length-includes-header", action="store_true", help="the length counts its own header")
    parser.add_argument("--json", action="store_true", help='print {"mti": ..., "fields": {...}}, one line per message')
    parser.add_argument("hex", nargs="*", help="the message in hex (spaces allowed); standard input when absent")
    args = parser.parse_args(argv)
    if (args.tpdu or args.length_includes_header) and args.framing is None:
        parser.error("--tpdu and --length-includes-header describe a framing: give --framing too")
    try:
        dialect = load_dialect(args.dialect)
        text = " ".join(args.hex) if args.hex else sys.stdin.read()
        data = parse_hex(text, None if args.framing else dialect)
        framing = (
            Framing(args.framing, tpdu=args.tpdu, includes_header=args.length_includes_header)
            if args.framing else None
        )
        dumped = dump(data, dialect, framing)
    except (DumpError, DialectError) as e:
        print(f"isodump: {e}", file=sys.stderr)
        return 1
    blocks = [as_json(item) if args.json else as_text(item, dialect) for item in dumped]
    print(("\n" if args.json else "\n\n").join(blocks), file=sys.stdout)
    return 0
