"""ISO 8583 dialects: a bank's flavour of the standard, described in a TOML file.

A dialect file names each field with a jPOS field-packager class (``IFA_LLNUM``,
``IFB_NUMERIC`` ...) so that integration engineers can copy a bank's jPOS packager
XML almost line for line; the classes become pyiso8583 field specifications here.
A bank's own dialect starts from a shipped one with ``extends`` and overrides only
the fields that differ.  Loading validates everything, so a bad file fails at
start-up naming the file, the field and the problem rather than at the first message.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import iso8583
from iso8583.decoder import DecodeError
from iso8583.encoder import EncodeError

from switch.iso.codec import Codec, compile_codec

Message = dict[str, str]
"""A message as pyiso8583 documents it: ``{"t": "0200", "2": "4111...", "3": "000000"}``.
Binary fields hold hex strings."""

SPECS_DIR = Path(__file__).resolve().parents[2] / "specs" / "dialects"

# The fields PCI DSS and every network treat as card data, whatever a dialect says.
ALWAYS_SENSITIVE = frozenset({"2", "14", "35", "36", "45", "52", "55"})

# class -> (data encoding, length encoding, length-prefix size, counts nibbles, digits only)
# "text" is replaced by the dialect's charset (ASCII by default, cp500 for EBCDIC hosts).
_CLASSES: dict[str, tuple[str, str, int, bool, bool]] = {
    "IF_CHAR": ("text", "text", 0, False, False),
    "IFA_NUMERIC": ("text", "text", 0, False, True),
    "IFA_LLNUM": ("text", "text", 2, False, True),
    "IFA_LLLNUM": ("text", "text", 3, False, True),
    "IFA_LLCHAR": ("text", "text", 2, False, False),
    "IFA_LLLCHAR": ("text", "text", 3, False, False),
    "IFA_BINARY": ("text", "text", 0, False, False),
    "IFB_NUMERIC": ("b", "bcd", 0, True, True),
    "IFB_LLNUM": ("b", "bcd", 1, True, True),
    "IFB_LLLNUM": ("b", "bcd", 2, True, True),
    "IFB_LLHEX": ("b", "bcd", 1, True, False),
    "IFB_LLCHAR": ("text", "bcd", 1, False, False),
    "IFB_LLLCHAR": ("text", "bcd", 2, False, False),
    "IFB_BINARY": ("b", "bcd", 0, False, False),
    "IFB_LLBINARY": ("b", "bcd", 1, False, False),
    "IFB_LLLBINARY": ("b", "bcd", 2, False, False),
}
FIELD_CLASSES = tuple(sorted(_CLASSES))
_MASK_STYLES = ("pan", "last4", "full")
_TOP_KEYS = {
    "name", "packager", "description", "version", "extends", "mti", "bitmap", "charset",
    "cvv_field", "original_data_field", "fields",
}
_FIELD_KEYS = {"class", "length", "name", "sensitive", "mask"}


class DialectError(ValueError):
    """A dialect file is wrong; the message names the file, the key and what was expected."""


class MessageError(ValueError):
    """A message could not be encoded or decoded.

    ``field`` is the field number (``"t"`` for the MTI, ``"p"`` for the bitmap) and
    ``offset`` the byte offset in the message where decoding failed (None on encode).
    """

    def __init__(self, reason: str, field: str | None = None, offset: int | None = None) -> None:
        self.reason = reason
        self.field = field
        self.offset = offset
        where = []
        if field is not None:
            where.append(f"field {field}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        super().__init__(f"{reason} ({', '.join(where)})" if where else reason)


@dataclass(frozen=True)
class FieldDef:
    number: str
    name: str
    cls: str
    length: int
    sensitive: bool
    mask: str  # "pan" | "last4" | "full"; meaningful only when sensitive


@dataclass(frozen=True)
class Dialect:
    """A loaded, validated dialect: encode/decode plus the metadata the switch needs."""

    name: str
    packager: str
    description: str
    version: int
    cvv_field: str | None
    original_data_field: str
    fields: Mapping[str, FieldDef]
    source: str
    spec: Mapping[str, Any]
    _numeric: frozenset[str]
    _codec: Codec | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled from the spec at construction, so `dataclasses.replace` cannot leave a stale codec.
        object.__setattr__(self, "_codec", compile_codec(self.spec, self._numeric))

    @property
    def sensitive(self) -> frozenset[str]:
        return frozenset(n for n, f in self.fields.items() if f.sensitive)

    @functools.cached_property
    def mask_styles(self) -> Mapping[str, str]:
        """How each field that is never shown whole is masked (``pan``, ``last4``, ``full``): the
        dialect's sensitive fields, and `ALWAYS_SENSITIVE` whatever it says (field 2 as a PAN).
        Computed once per dialect: `switch.iso.masking.mask_message` runs for every message."""
        styles = {number: "pan" if number == "2" else "full" for number in ALWAYS_SENSITIVE}
        styles.update((number, f.mask) for number, f in self.fields.items() if f.sensitive)
        return styles

    def field_name(self, number: str) -> str:
        if number == "t":
            return "Message Type Indicator"
        f = self.fields.get(number)
        return f.name if f else "unknown"

    def encode(self, message: Mapping[str, str]) -> bytes:
        """Encode; raises `MessageError` naming the offending field.  The compiled codec encodes a
        well-formed message; anything else goes to pyiso8583, which decides the error."""
        if self._codec is not None:
            raw = self._codec.encode(message)
            if raw is not None:
                return raw
        return self._slow_encode(message)

    def _slow_encode(self, message: Mapping[str, str]) -> bytes:
        """`encode` by pyiso8583 alone: the reference the compiled codec must match byte for byte."""
        doc = dict(message)
        doc.pop("p", None)
        doc.pop("1", None)
        for number in sorted(self._numeric.intersection(doc), key=int):  # the first in field order, every run
            value = doc[number]
            if not isinstance(value, str):  # a plugin's int: an error naming the field, not an AttributeError
                raise MessageError(f"expected a string of digits, got {type(value).__name__}", number)
            if not value.isdigit():
                raise MessageError("expected digits only", number)
        try:
            raw, _ = iso8583.encode(doc, self.spec)
        except EncodeError as e:
            raise MessageError(e.msg, e.field) from None
        except (TypeError, KeyError) as e:
            raise MessageError(f"cannot encode: {e}") from None
        return bytes(raw)

    def decode(self, data: bytes) -> Message:
        """Decode; raises `MessageError` with the field and byte offset of the problem.  The compiled
        codec decodes a well-formed message; anything else goes to pyiso8583, which decides the error."""
        if self._codec is not None:
            doc = self._codec.decode(data)
            if doc is not None:
                return doc
        return self._slow_decode(data)

    def _slow_decode(self, data: bytes) -> Message:
        """`decode` by pyiso8583 alone: the reference the compiled codec must match."""
        try:
            doc, _ = iso8583.decode(data, self.spec)
        except DecodeError as e:
            raise MessageError(e.msg, e.field, e.pos) from None
        except KeyError as e:
            raise MessageError(f"bitmap announces field {e.args[0]}, which dialect {self.name} does not define") from None
        doc.pop("p", None)
        doc.pop("1", None)
        if not (len(doc["t"]) == 4 and doc["t"].isdigit()):
            raise MessageError("MTI is not four digits", "t", 0)
        for number in self._numeric.intersection(doc):
            if not doc[number].isdigit():
                raise MessageError("expected digits only", number)
        return doc


def _resolve(name_or_path: str, base: Path | None) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path:
        if not candidate.is_absolute() and base is not None and not candidate.exists():
            candidate = base / candidate
        return candidate
    for path in sorted(SPECS_DIR.glob("*.toml")):
        if path.stem == name_or_path:
            return path
    for path in sorted(SPECS_DIR.glob("*.toml")):
        with path.open("rb") as f:
            if tomllib.load(f).get("packager") == name_or_path:
                return path
    known = ", ".join(sorted(p.stem for p in SPECS_DIR.glob("*.toml")))
    raise DialectError(f"unknown dialect {name_or_path!r}; expected a file path or one of: {known}")


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise DialectError(f"{path}: dialect file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise DialectError(f"{path}: not valid TOML: {e}") from None


def _merged_document(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's document with its ``extends`` chain applied (fields merged per key)."""
    if path.resolve() in seen:
        raise DialectError(f"{path}: extends: cycle through {', '.join(str(p) for p in seen)}")
    doc = _read(path)
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise DialectError(f"{path}: unknown key(s) {sorted(unknown)}; expected only {sorted(_TOP_KEYS)}")
    fields = doc.get("fields", {})
    if not isinstance(fields, dict):
        raise DialectError(f"{path}: fields: expected a table of field number = {{ class, length, name }}")
    parent_name = doc.get("extends")
    if parent_name is None:
        return doc
    if not isinstance(parent_name, str):
        raise DialectError(f"{path}: extends: expected a dialect name or file path string")
    try:
        parent_path = _resolve(parent_name, path.parent)
    except DialectError as e:
        raise DialectError(f"{path}: extends: {e}") from None
    parent = _merged_document(parent_path, seen + (path.resolve(),))
    merged_fields = {k: dict(v) for k, v in parent.get("fields", {}).items()}
    for number, override in fields.items():
        if not isinstance(override, dict):
            raise DialectError(f"{path}: fields.{number}: expected an inline table")
        merged_fields[number] = {**merged_fields.get(number, {}), **override}
    merged = {**parent, **{k: v for k, v in doc.items() if k != "extends"}}
    merged["fields"] = merged_fields
    merged.pop("extends", None)
    return merged


def _field_def(path: Path, number: str, raw: Mapping[str, Any]) -> FieldDef:
    where = f"{path}: fields.{number}"
    if not number.isdigit() or not 2 <= int(number) <= 128:
        raise DialectError(f"{where}: field numbers run from 2 to 128")
    unknown = set(raw) - _FIELD_KEYS
    if unknown:
        raise DialectError(f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(_FIELD_KEYS)}")
    cls = raw.get("class")
    if cls not in _CLASSES:
        raise DialectError(f"{where}.class: got {cls!r}; expected one of {', '.join(FIELD_CLASSES)}")
    length = raw.get("length")
    if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 9999:
        raise DialectError(f"{where}.length: got {length!r}; expected an integer from 1 to 9999")
    _, len_enc, prefix, _, _ = _CLASSES[cls]
    stated = 10 ** (prefix * 2 if len_enc == "bcd" else prefix) - 1  # the most a length prefix can say
    if prefix and length > stated:
        raise DialectError(f"{where}.length: {length} does not fit the {cls} length prefix, which says at most {stated}")
    name = raw.get("name", f"Field {number}")
    if not isinstance(name, str):
        raise DialectError(f"{where}.name: expected a string")
    sensitive = raw.get("sensitive", False) or number in ALWAYS_SENSITIVE
    if not isinstance(sensitive, bool):
        raise DialectError(f"{where}.sensitive: expected true or false")
    mask = raw.get("mask", "pan" if number == "2" else "full")
    if mask not in _MASK_STYLES:
        raise DialectError(f"{where}.mask: got {mask!r}; expected one of {', '.join(_MASK_STYLES)}")
    return FieldDef(number, name, cls, length, sensitive, mask)


def _pyiso_field(f: FieldDef, charset: str) -> dict[str, Any]:
    data_enc, len_enc, len_type, nibbles, _ = _CLASSES[f.cls]
    data_enc = charset if data_enc == "text" else data_enc
    len_enc = charset if len_enc == "text" else len_enc
    max_len = f.length * 2 if f.cls == "IFA_BINARY" else f.length
    spec: dict[str, Any] = {
        "data_enc": data_enc, "len_enc": len_enc, "len_type": len_type, "max_len": max_len, "desc": f.name,
    }
    if nibbles:
        spec["len_count"] = "nibbles"
        spec["left_pad"] = "0"
    return spec


def load_dialect(name_or_path: str, base: Path | None = None) -> Dialect:
    """Load a shipped dialect by name (or jPOS packager name), or a dialect file by path."""
    path = _resolve(name_or_path, base)
    doc = _merged_document(path)
    charset = doc.get("charset", "ascii")
    try:
        "0".encode(charset)
    except (LookupError, TypeError):
        raise DialectError(f"{path}: charset: got {charset!r}; expected a Python codec name such as ascii or cp500") from None
    mti = doc.get("mti", "ascii")
    bitmap = doc.get("bitmap", "ascii")
    if mti not in ("ascii", "bcd"):
        raise DialectError(f"{path}: mti: got {mti!r}; expected \"ascii\" or \"bcd\"")
    if bitmap not in ("ascii", "binary"):
        raise DialectError(f"{path}: bitmap: got {bitmap!r}; expected \"ascii\" or \"binary\"")
    version = doc.get("version", 1987)
    if version not in (1987, 1993):
        raise DialectError(f"{path}: version: got {version!r}; expected 1987 or 1993")
    fields = {n: _field_def(path, n, raw) for n, raw in sorted(doc.get("fields", {}).items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)}
    for key in ("cvv_field", "original_data_field"):
        ref = doc.get(key)
        if ref is not None and ref not in fields:
            raise DialectError(f"{path}: {key}: field {ref!r} is not defined in [fields]")
    bitmap_spec = (
        {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 8}
        if bitmap == "binary"
        else {"data_enc": charset, "len_enc": charset, "len_type": 0, "max_len": 16}
    )
    spec: dict[str, Any] = {
        "h": {"data_enc": charset, "len_enc": charset, "len_type": 0, "max_len": 0, "desc": "Header"},
        "t": {"data_enc": "b" if mti == "bcd" else charset, "len_enc": charset, "len_type": 0,
              "max_len": 2 if mti == "bcd" else 4, "desc": "Message Type Indicator"},
        "p": {**bitmap_spec, "desc": "Primary bitmap"},
        "1": {**bitmap_spec, "desc": "Secondary bitmap"},
    }
    for number, f in fields.items():
        spec[number] = _pyiso_field(f, charset)
    numeric = frozenset(n for n, f in fields.items() if _CLASSES[f.cls][4])
    cvv = doc.get("cvv_field")
    return Dialect(
        name=str(doc.get("name", path.stem)),
        packager=str(doc.get("packager", "")),
        description=str(doc.get("description", "")),
        version=version,
        cvv_field=cvv,
        original_data_field=doc.get("original_data_field", "90" if version == 1987 else "56"),
        fields=fields,
        source=str(path),
        spec=spec,
        _numeric=numeric,
    )
