"""The wire format: one JSON object per line in, one per line out.

Decoding is strict (UTF-8 only, no NaN or Infinity, no duplicate keys) because a
lenient parser lets two systems read the same line differently, and with money
that difference is a dispute. Answers are encoded as ASCII-only JSON so an odd
string echoed back (an id, an op name) can never make encoding fail.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from switch.gateway.errors import ApiError, ErrorCode
from switch.gateway.validate import IDENTIFIER, invalid, json_type

RequestId = str | int
MAX_INTEGER_ID = 2**53 - 1
MAX_STRING_ID = 128


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("an object repeats a key")
        obj[key] = value
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
"""Made once: ``json.loads`` with a hook builds a decoder (and its scanner) for every line."""


def decode_line(line: bytes | bytearray) -> Any:
    """The JSON value on one line (without its newline)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(ErrorCode.INVALID_JSON, "the line is not valid UTF-8") from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise ApiError(ErrorCode.INVALID_JSON, f"the line is not valid JSON: {e.msg} at column {e.colno}") from None
    except (ValueError, RecursionError) as e:
        reason = "it nests too deeply" if isinstance(e, RecursionError) else str(e)
        raise ApiError(ErrorCode.INVALID_JSON, f"the line is not acceptable JSON: {reason}") from None


def request_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(None, f"expected a JSON object, got {json_type(value)}")
    return value


def request_id(obj: dict[str, Any]) -> RequestId:
    """The client's id, which every answer echoes; anything a client could not match exactly is refused."""
    value = obj.get("id")
    expected = f"a string of 1-{MAX_STRING_ID} characters or an integer of at most 2^53-1 in magnitude"
    if value is None:
        raise invalid("id", f"missing required field; expected {expected}")
    if isinstance(value, str) and 1 <= len(value) <= MAX_STRING_ID:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INTEGER_ID:
        return value
    raise invalid("id", f"expected {expected}")


def op_name(obj: dict[str, Any]) -> str:
    value = obj.get("op")
    if not isinstance(value, str):
        got = "nothing" if value is None else json_type(value)
        raise invalid("op", f"expected the operation name as a string, got {got}")
    if not IDENTIFIER.fullmatch(value):
        raise ApiError(ErrorCode.UNKNOWN_OP, "unknown operation", field="op")
    return value


def encode(answer: dict[str, Any]) -> bytes:
    """orjson on the hot path; the standard library for what it cannot take (a request id over 64 bits)."""
    try:
        return orjson.dumps(answer, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return json.dumps(answer, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def success(request_id: RequestId | None, fields: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "ok": True, **{k: v for k, v in fields.items() if k not in ("id", "ok")}}


def failure(request_id: RequestId | None, error: ApiError) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": error.as_answer()}
