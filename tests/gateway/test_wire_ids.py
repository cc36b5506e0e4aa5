"""Answers echo the request id exactly, even where the fast encoder cannot (ids over 64 bits)."""

import json

from switch.gateway.wire import encode


def test_big_integer_id_is_echoed_exactly():
    line = encode({"id": 2**70, "ok": True, "pong": True})
    assert line.endswith(b"\n") and json.loads(line) == {"id": 2**70, "ok": True, "pong": True}


def test_non_ascii_text_is_utf8_json():
    assert json.loads(encode({"id": "ü-1", "ok": True})) == {"id": "ü-1", "ok": True}
