"""Message framing on a TCP stream: the length header (and optional TPDU) around each message.

jPOS calls these channels.  The names here describe the header itself:

======  ===========================================  ==============================
name    header                                        jPOS equivalent
======  ===========================================  ==============================
2b      2-byte big-endian binary length               PostChannel / NACChannel
4b      4-byte big-endian binary length               RawChannel
2a      2 ASCII decimal digits                        --
4a      4 ASCII decimal digits                        ASCIIChannel
2bcd    2-byte BCD length (up to 9999)                BCDChannel
======  ===========================================  ==============================

A TCP read may carry half a frame or several frames; `FrameDecoder` buffers and
splits.  A frame larger than the configured maximum is a protocol violation (or a
peer speaking another framing) and raises `FramingError`, because buffering
unbounded input from a peer is how a switch runs out of memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import structlog
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from switch.net import turnwrites

TPDU_LENGTH = 5
DEFAULT_MAX_FRAME = 8192

log = structlog.get_logger("kswitch.framing")


class FramingError(ValueError):
    """The byte stream does not follow the configured framing."""


def _bin_codec(width: int) -> tuple[Callable[[int], bytes], Callable[[bytes], int], int]:
    return (lambda n: n.to_bytes(width, "big"), lambda b: int.from_bytes(b, "big"), 256**width - 1)


def _ascii_codec(width: int) -> tuple[Callable[[int], bytes], Callable[[bytes], int], int]:
    def decode(b: bytes) -> int:
        if not b.isdigit():
            raise FramingError(f"length header {b!r} is not {width} ASCII digits")
        return int(b)

    return (lambda n: b"%0*d" % (width, n), decode, 10**width - 1)


def _bcd_codec(width: int) -> tuple[Callable[[int], bytes], Callable[[bytes], int], int]:
    def decode(b: bytes) -> int:
        digits = b.hex()
        if not digits.isdigit():
            raise FramingError(f"length header 0x{digits} is not BCD")
        return int(digits)

    return (lambda n: bytes.fromhex("%0*d" % (width * 2, n)), decode, 10 ** (width * 2) - 1)


HEADERS: dict[str, tuple[int, Callable[[int], tuple[Callable[[int], bytes], Callable[[bytes], int], int]]]] = {
    "2b": (2, _bin_codec),
    "4b": (4, _bin_codec),
    "2a": (2, _ascii_codec),
    "4a": (4, _ascii_codec),
    "2bcd": (2, _bcd_codec),
}
FRAMING_NAMES = tuple(HEADERS)


@dataclass(frozen=True)
class Frame:
    """One message off the wire. An empty payload is a keep-alive."""

    payload: bytes
    tpdu: bytes | None = None


def swap_tpdu(tpdu: bytes) -> bytes:
    """A reply's TPDU: same ID, destination and source exchanged."""
    return tpdu[:1] + tpdu[3:5] + tpdu[1:3]


@dataclass(frozen=True)
class Framing:
    """How messages are delimited on one link. Options and defaults:

    - ``header``: one of `FRAMING_NAMES`.
    - ``tpdu``: a 5-byte TPDU follows the header (default False).
    - ``includes_header``: the length counts the header itself (default False; AmexChannel style).
    - ``max_frame``: largest accepted message in bytes (default 8192).
    """

    header: str
    tpdu: bool = False
    includes_header: bool = False
    max_frame: int = DEFAULT_MAX_FRAME

    def __post_init__(self) -> None:
        if self.header not in HEADERS:
            raise ValueError(f"unknown framing {self.header!r}; expected one of {', '.join(FRAMING_NAMES)}")
        width, make = HEADERS[self.header]
        encode, decode, limit = make(width)
        if self.max_frame < 1:
            raise ValueError(f"max_frame must be positive, got {self.max_frame}")
        object.__setattr__(self, "_width", width)
        object.__setattr__(self, "_encode_len", encode)
        object.__setattr__(self, "_decode_len", decode)
        object.__setattr__(self, "_limit", limit)

    @property
    def header_length(self) -> int:
        return self._width  # type: ignore[attr-defined]

    def frame(self, payload: bytes, tpdu: bytes | None = None) -> bytes:
        """Wrap one message (and its TPDU, when this framing carries one) for the wire."""
        if self.tpdu:
            if tpdu is None or len(tpdu) != TPDU_LENGTH:
                raise FramingError(f"this framing carries a {TPDU_LENGTH}-byte TPDU; got {tpdu!r}")
            body = tpdu + payload
        else:
            body = payload
        if len(payload) > self.max_frame:
            raise FramingError(f"message of {len(payload)} bytes exceeds max_frame {self.max_frame}")
        length = len(body) + (self._width if self.includes_header else 0)  # type: ignore[attr-defined]
        if length > self._limit:  # type: ignore[attr-defined]
            raise FramingError(f"length {length} does not fit a {self.header} header")
        return self._encode_len(length) + body  # type: ignore[attr-defined]

    def decoder(self) -> FrameDecoder:
        return FrameDecoder(self)


class FrameDecoder:
    """Incremental splitter for one connection's inbound byte stream."""

    def __init__(self, framing: Framing) -> None:
        self.framing = framing
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Frame]:
        """Yield every complete frame now buffered; raise `FramingError` on a bad header."""
        self._buffer += data
        f = self.framing
        width = f.header_length
        extra = TPDU_LENGTH if f.tpdu else 0
        while len(self._buffer) >= width:
            length = f._decode_len(bytes(self._buffer[:width]))  # type: ignore[attr-defined]
            if f.includes_header:
                if length == 0:
                    length = width
                if length < width:
                    raise FramingError(f"length {length} is smaller than its own {width}-byte header")
                length -= width
            if length == 0:
                del self._buffer[:width]
                yield Frame(b"")
                continue
            if length - extra > f.max_frame:
                raise FramingError(f"frame of {length} bytes exceeds max_frame {f.max_frame}")
            if length < extra:
                raise FramingError(f"frame of {length} bytes is too short for its {extra}-byte TPDU")
            if len(self._buffer) < width + length:
                return
            body = bytes(self._buffer[width : width + length])
            del self._buffer[: width + length]
            yield Frame(body[extra:], body[:extra] if extra else None)


class FramedProtocol(Protocol):
    """A protocol that speaks whole frames. Subclasses implement `frameReceived`.

    A framing violation closes this connection only (with a logged reason): the peer's
    stream can no longer be trusted to resynchronise, and other links are unaffected.
    """

    framing: Framing
    peer_name = "peer"

    def connectionMade(self) -> None:
        self._decoder = self.framing.decoder()

    def dataReceived(self, data: bytes) -> None:
        try:
            for frame in self._decoder.feed(data):
                self.frameReceived(frame)
                if self.transport is None or getattr(self.transport, "disconnecting", False):
                    return
        except FramingError as e:
            log.error("framing_error", peer=self.peer_name, framing=self.framing.header, reason=str(e))
            self.transport.abortConnection()

    def frameReceived(self, frame: Frame) -> None:
        raise NotImplementedError

    def sendFrame(self, payload: bytes, tpdu: bytes | None = None) -> None:
        turnwrites.write(self.transport, self.framing.frame(payload, tpdu))  # with the turn's other frames on this link

    def connectionLost(self, reason: Failure) -> None:
        self._decoder = self.framing.decoder()
