"""A dialect's ISO 8583 codec compiled once, so that a normal message costs a few tight loops.

Why it exists: pyiso8583 interprets its spec dict for every field of every message (dict
lookups, per-field helper calls, bitmaps built from lists), which profiles showed at about a
seventh of the reactor's CPU per authorization.  `compile_codec` reads the same spec dict once,
when a `switch.iso.dialect.Dialect` is built, into per-field tuples and length-prefix tables.

What it owns: only the happy path.  `Codec.encode` and `Codec.decode` return None at the first
thing out of the ordinary (an unknown key, a wrong length, a non-digit in a numeric field, an
unencodable character, a truncated or over-long message, a tertiary bitmap, a field kind it was
not compiled for), and the dialect then runs pyiso8583, the reference, which produces the
result or the `MessageError` it always did.  So whatever this module returns must be exactly
what the pyiso8583 path would return (bytes, or the dict with its keys in the same order); it
never raises on bad input and never decides an error.  The checks the dialect adds around
pyiso8583 (digits in numeric fields, a four-digit MTI on decode) are repeated here as bail-outs.
"""

from __future__ import annotations

from binascii import a2b_hex
from typing import Any, Mapping

_TEXT, _BINARY, _NIBBLES = 0, 1, 2
"""Field data kinds: text in a charset; hex string as bytes; BCD/hex digits, left-padded with 0 when odd."""

_BITMAP_BYTES = 16  # primary + secondary
_FIELD_1 = 1 << 127  # in the 128-bit bitmap, field n is bit 128 - n
_SECONDARY = (1 << 64) - 1

_FOREIGN: Any = object()
"""A key of a message that is neither the MTI, a bitmap nor a compiled field."""

_Spec = Mapping[str, Mapping[str, Any]]
_EncodeEntry = tuple[int, int, int, str, int, tuple[bytes, ...] | None, bool]
_DecodeEntry = tuple[str, int, str, int, int, dict[bytes, int], bool]


class Codec:
    """Encode and decode the messages pyiso8583 would accept for one spec, or say None."""

    __slots__ = ("_mti_bcd", "_mti_charset", "_bitmap_charset", "_bitmap_width", "_by_key", "_by_byte")

    def __init__(
        self,
        mti_charset: str | None,
        bitmap_charset: str | None,
        by_key: dict[str, _EncodeEntry | None],
        by_byte: tuple[tuple[tuple[_DecodeEntry, ...] | None, ...], ...],
    ) -> None:
        self._mti_bcd = mti_charset is None
        self._mti_charset = mti_charset or ""
        self._bitmap_charset = bitmap_charset
        self._bitmap_width = 8 if bitmap_charset is None else 16
        self._by_key = by_key
        self._by_byte = by_byte

    def encode(self, message: Mapping[str, str]) -> bytes | None:
        """The bytes pyiso8583 would produce for ``message``, or None to let it decide."""
        mti = message.get("t")
        if type(mti) is not str:
            return None
        try:
            if self._mti_bcd:
                head = a2b_hex(mti)
                if len(head) != 2:
                    return None
            else:
                head = mti.encode(self._mti_charset)
                if len(head) != 4:
                    return None
            by_key = self._by_key
            chosen = []
            for key, value in message.items():
                entry = by_key.get(key, _FOREIGN)
                if entry is None:  # "t", handled above, and the bitmaps, which are recomputed
                    continue
                if entry is _FOREIGN or type(value) is not str:
                    return None
                chosen.append((entry[0], value, entry))
            chosen.sort()
            parts = [head, b""]
            bits = 0
            for _, value, (_, bit, kind, charset, max_len, prefixes, numeric) in chosen:
                if numeric and not value.isdigit():
                    return None
                if kind == _TEXT:
                    data = value.encode(charset)
                    n = len(data)
                elif kind == _BINARY:
                    data = a2b_hex(value)
                    n = len(data)
                else:
                    n = len(value)
                    data = a2b_hex("0" + value if n & 1 else value)
                if prefixes is None:
                    if n != max_len:
                        return None
                elif n < len(prefixes):
                    parts.append(prefixes[n])
                else:
                    return None
                parts.append(data)
                bits |= bit
        except ValueError:  # binascii.Error and UnicodeEncodeError included
            return None
        if bits & _SECONDARY:
            bits |= _FIELD_1
            width = 16
        else:
            bits >>= 64
            width = 8
        charset = self._bitmap_charset
        parts[1] = bits.to_bytes(width, "big") if charset is None else format(bits, f"0{width * 2}X").encode(charset)
        return b"".join(parts)

    def decode(self, data: bytes) -> dict[str, str] | None:
        """The dict pyiso8583 would produce for ``data`` (bitmaps left out), or None to let it decide."""
        if type(data) is not bytes:
            if type(data) is not bytearray:
                return None
            data = bytes(data)
        end = len(data)
        try:
            if self._mti_bcd:
                if end < 2:
                    return None
                mti = data[:2].hex().upper()
                i = 2
            else:
                if end < 4:
                    return None
                mti = data[:4].decode(self._mti_charset)
                i = 4
            if len(mti) != 4 or not mti.isdigit():
                return None
            bitmap = b""
            for _ in range(2):  # the primary bitmap, then the secondary if the primary has field 1
                j = i + self._bitmap_width
                if j > end:
                    return None
                raw = data[i:j]
                if self._bitmap_charset is not None:
                    raw = bytes.fromhex(raw.decode(self._bitmap_charset))
                    if len(raw) != 8:  # whitespace, which bytes.fromhex skips
                        return None
                bitmap += raw
                i = j
                if not bitmap[0] & 0x80:
                    break
            doc = {"t": mti}
            by_byte = self._by_byte
            for k, byte in enumerate(bitmap):
                if not byte:
                    continue
                group = by_byte[k][byte]
                if group is None:
                    return None
                for key, kind, charset, max_len, width, lengths, numeric in group:
                    if width:
                        n = lengths.get(data[i:i + width])
                        if n is None:
                            return None
                        i += width
                    else:
                        n = max_len
                    if kind == _NIBBLES:
                        j = i + ((n + 1) >> 1)
                        if j > end:
                            return None
                        value = data[i:j].hex().upper()
                        if n & 1:
                            if value[0] != "0":
                                return None
                            value = value[1:]
                    else:
                        j = i + n
                        if j > end:
                            return None
                        value = data[i:j].decode(charset) if kind == _TEXT else data[i:j].hex().upper()
                    if numeric and not value.isdigit():
                        return None
                    doc[key] = value
                    i = j
        except ValueError:  # UnicodeDecodeError, and bytes.fromhex on a text bitmap
            return None
        return doc if i == end else None


def compile_codec(spec: _Spec, numeric: frozenset[str]) -> Codec | None:
    """The codec for a pyiso8583 ``spec`` (the fields in ``numeric`` must hold digits only),
    or None when the MTI, bitmap or header take a shape it does not handle.  A field whose
    shape it does not handle is left out: messages carrying it go to pyiso8583."""
    if spec["h"]["max_len"] > 0:
        return None
    mti_enc = spec["t"]["data_enc"]
    bitmap_enc = spec["p"]["data_enc"]
    if spec["1"]["data_enc"] != bitmap_enc:
        return None
    if bitmap_enc != "b" and not _hex_digits_round_trip(bitmap_enc):
        return None
    if mti_enc != "b" and not _is_charset(mti_enc):
        return None
    by_key: dict[str, _EncodeEntry | None] = {"t": None, "p": None, "1": None}
    decode_entries: dict[int, _DecodeEntry] = {}
    tables: dict[tuple[str, int, int], tuple[tuple[bytes, ...], dict[bytes, int]] | None] = {}
    for key, field_spec in spec.items():
        if not (key.isdigit() and key == str(int(key)) and 2 <= int(key) <= 128) or key == "65":
            continue  # pyiso8583 treats field 65 as the tertiary bitmap's flag
        compiled = _field(field_spec, tables)
        if compiled is None:
            continue
        number = int(key)
        kind, charset, max_len, width, prefixes, lengths = compiled
        by_key[key] = (number, 1 << (128 - number), kind, charset, max_len, prefixes, key in numeric)
        decode_entries[number] = (key, kind, charset, max_len, width, lengths, key in numeric)
    by_byte = tuple(tuple(_group(decode_entries, k, byte) for byte in range(256)) for k in range(_BITMAP_BYTES))
    return Codec(
        None if mti_enc == "b" else mti_enc, None if bitmap_enc == "b" else bitmap_enc, by_key, by_byte
    )


def _is_charset(charset: str) -> bool:
    """Whether text can be encoded with it at all: pyiso8583 turns a bad name into an error, the codec must not."""
    try:
        "0".encode(charset)
    except (LookupError, TypeError):
        return False
    return True


def _hex_digits_round_trip(charset: str) -> bool:
    """Whether hex digits survive the charset both ways, as a text bitmap needs."""
    digits = "0123456789ABCDEF"
    try:
        return digits.encode(charset).decode(charset) == digits and len(digits.encode(charset)) == 16
    except (LookupError, ValueError):
        return False


def _field(
    field_spec: Mapping[str, Any],
    tables: dict[tuple[str, int, int], tuple[tuple[bytes, ...], dict[bytes, int]] | None],
) -> tuple[int, str, int, int, tuple[bytes, ...] | None, dict[bytes, int]] | None:
    """(kind, charset, max_len, prefix width, encode table, decode table), or None if not handled."""
    data_enc, len_enc, width, max_len = (field_spec[k] for k in ("data_enc", "len_enc", "len_type", "max_len"))
    nibbles = field_spec.get("len_count", "bytes") == "nibbles"
    if data_enc == "b":
        if nibbles and (field_spec.get("left_pad", "")[:1] != "0"):
            return None
        kind, charset = (_NIBBLES if nibbles else _BINARY), ""
    elif nibbles or not _is_charset(data_enc):
        return None
    else:
        kind, charset = _TEXT, data_enc
    if not isinstance(max_len, int) or max_len < 0 or width not in (0, 1, 2, 3, 4):
        return None
    if width == 0:
        return kind, charset, max_len, 0, None, {}
    if len_enc == "b":
        return None
    key = (len_enc, width, max_len)
    if key not in tables:
        tables[key] = _prefix_tables(len_enc, width, max_len)
    table = tables[key]
    if table is None:
        return None
    return kind, charset, max_len, width, table[0], table[1]


def _prefix_tables(len_enc: str, width: int, max_len: int) -> tuple[tuple[bytes, ...], dict[bytes, int]] | None:
    """Every length prefix pyiso8583 writes for lengths 0..max_len, and back; None if a prefix
    would not read back as its own length (then the field goes to pyiso8583 every time)."""
    digits = width * 2 if len_enc == "bcd" else width
    prefixes = []
    try:
        for n in range(min(max_len, 10**digits - 1) + 1):
            text = f"{n:0{digits}d}"
            raw = bytes.fromhex(text) if len_enc == "bcd" else text.encode(len_enc)
            back = int(raw.hex(), 10) if len_enc == "bcd" else int(raw.decode(len_enc))
            if len(raw) != width or back != n:
                return None
            prefixes.append(raw)
    except (LookupError, ValueError):
        return None
    return tuple(prefixes), {raw: n for n, raw in enumerate(prefixes)}


def _group(entries: dict[int, _DecodeEntry], k: int, byte: int) -> tuple[_DecodeEntry, ...] | None:
    """The fields byte ``k`` of the bitmap announces when it is ``byte``, in field order; None if one
    of them is not compiled (field 1 of byte 0 is the secondary bitmap's flag, not a field)."""
    group = []
    for bit in range(8):
        if byte & (0x80 >> bit):
            number = k * 8 + bit + 1
            if number == 1:
                continue
            if number not in entries:
                return None
            group.append(entries[number])
    return tuple(group)
