"""The compiled codec against pyiso8583, the reference: same bytes, same dicts, same errors.

Every property compares `Dialect.encode`/`decode` (compiled codec first, pyiso8583 when it bails
out) with `Dialect._slow_encode`/`_slow_decode` (pyiso8583 alone) on the same input.  The
compiled codec itself must also take the well-formed messages, or it would be a slow no-op.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switch.iso import dialect as dialect_module
from switch.iso.codec import compile_codec
from switch.iso.dialect import SPECS_DIR, Dialect, MessageError, load_dialect
from switch.tools.bench.link import authorization

SHIPPED = sorted(p.stem for p in SPECS_DIR.glob("*.toml"))
EBCDIC = 'name = "ebcdic"\nextends = "iso87ascii"\ncharset = "cp500"\n'
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", params=SHIPPED + ["ebcdic"])
def dialect(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Dialect:
    if request.param != "ebcdic":
        return load_dialect(request.param)
    path = tmp_path_factory.mktemp("dialect") / "ebcdic.toml"
    path.write_text(EBCDIC)
    return load_dialect(str(path))


def _capacity(spec: dict[str, Any]) -> int:
    """The longest value pyiso8583 can write in this field (its length prefix has so many digits)."""
    if spec["len_type"] == 0:
        return spec["max_len"]
    digits = spec["len_type"] * (2 if spec["len_enc"] == "bcd" else 1)
    return min(spec["max_len"], 10**digits - 1)


def _hex(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdefABCDEF", min_size=min_size, max_size=max_size)


def _value(d: Dialect, number: str) -> st.SearchStrategy[str]:
    """A valid value of any length the field's class allows."""
    spec = d.spec[number]
    cap = _capacity(spec)
    fixed = spec["len_type"] == 0
    numeric = number in d._numeric
    low = cap if fixed else (1 if numeric else 0)
    if spec["data_enc"] == "b":
        if spec.get("len_count") == "nibbles":
            return st.text("0123456789", min_size=low, max_size=cap) if numeric else _hex(low, cap)
        return st.binary(min_size=low, max_size=cap).map(lambda b: b.hex().upper())
    if numeric:
        return st.text("0123456789", min_size=low, max_size=cap)
    return st.text(st.characters(max_codepoint=127), min_size=low, max_size=cap)


def messages(d: Dialect) -> st.SearchStrategy[dict[str, str]]:
    """Well-formed messages: a random subset of the dialect's fields with random valid values."""
    numbers = sorted(n for n in d.fields if n != "65")  # pyiso8583 drops 65, the tertiary bitmap's flag
    mti = st.text("0123456789", min_size=4, max_size=4)

    def build(chosen: list[str]) -> st.SearchStrategy[dict[str, str]]:
        return st.fixed_dictionaries({"t": mti, **{n: _value(d, n) for n in chosen}})

    return st.lists(st.sampled_from(numbers), unique=True, max_size=30).flatmap(build)


def outcome(call: Callable[[Any], Any], argument: Any) -> tuple[Any, ...]:
    """What a call gives, comparable across paths: the result (a dict as its items, in order) or the error."""
    try:
        result = call(argument)
    except MessageError as e:
        return ("MessageError", e.reason, e.field, e.offset)
    except Exception as e:  # noqa: BLE001 - a non-MessageError must be the same one too
        return (type(e).__name__, str(e))
    return ("ok", list(result.items()) if isinstance(result, dict) else result)


def test_every_shipped_dialect_is_compiled(dialect):
    assert dialect._codec is not None


def test_valid_messages_encode_and_decode_as_pyiso8583_does(dialect):
    @SETTINGS
    @given(messages(dialect))
    def check(message):
        raw = dialect._codec.encode(message)
        assert raw is not None, "a well-formed message went to pyiso8583"
        assert raw == dialect._slow_encode(message)
        doc = dialect._codec.decode(raw)
        assert doc is not None, "a well-formed message went to pyiso8583"
        assert list(doc.items()) == list(dialect._slow_decode(raw).items())

    check()


_UNKNOWN_KEYS = ["1", "65", "129", "192", "193", "0", "02", "h", "x", "\u0663", 7]
_BAD_VALUES = [1, None, b"12", "", "\u00e9", "\u20ac", "\u00b2", "\u0663", "ZZ", "ABC", " 1", "1" * 1000]


@st.composite
def invalid_messages(draw: st.DrawFn, d: Dialect) -> dict[Any, Any]:
    """A well-formed message spoiled one way: too long, too short, a non-digit, a character the
    charset lacks, odd or non-hex binary, a non-string, an unknown field, a bad or missing MTI."""
    message: dict[Any, Any] = draw(messages(d))
    numbers = [n for n in message if n != "t"]
    how = draw(st.sampled_from(["longer", "shorter", "replace", "insert", "key", "mti"] if numbers else ["key", "mti"]))
    if how == "key":
        message[draw(st.sampled_from(_UNKNOWN_KEYS))] = draw(st.sampled_from(["1", "00", "A"]))
    elif how == "mti":
        spoiled = draw(st.sampled_from(["020", "02000", "02a0", "0x00", "\u0660200", 200, None, "DROP"]))
        if spoiled == "DROP":
            del message["t"]
        else:
            message["t"] = spoiled
    else:
        number = draw(st.sampled_from(numbers))
        value = message[number]
        if how == "longer":
            message[number] = value + draw(st.sampled_from(["1", "12", "A"])) * draw(st.integers(1, 1100))
        elif how == "shorter":
            message[number] = value[: draw(st.integers(0, max(len(value) - 1, 0)))]
        elif how == "replace":
            message[number] = draw(st.sampled_from(_BAD_VALUES))
        else:
            at = draw(st.integers(0, len(value)))
            message[number] = value[:at] + draw(st.sampled_from(["\u00e9", "\u20ac", "A", "z", " ", "\u00b2", "G"])) + value[at:]
    return message


def test_invalid_messages_fail_as_pyiso8583_fails(dialect):
    @SETTINGS
    @given(invalid_messages(dialect))
    def check(message):
        assert outcome(dialect.encode, message) == outcome(dialect._slow_encode, message)

    check()


@st.composite
def damaged_encodings(draw: st.DrawFn, d: Dialect) -> bytes:
    """A valid encoding truncated, with bytes changed, inserted or appended; or random bytes after a
    valid MTI and bitmap; or plain random bytes."""
    raw = d._slow_encode(draw(messages(d)))
    how = draw(st.sampled_from(["truncate", "change", "insert", "append", "random tail", "random"]))
    if how == "truncate":
        return raw[: draw(st.integers(0, len(raw)))]
    if how == "change":
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(raw) - 1))
            raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
        return raw
    if how == "insert":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    if how == "append":
        return raw + draw(st.binary(min_size=1, max_size=4))
    if how == "random tail":
        head = 2 if d.spec["t"]["data_enc"] == "b" else 4
        head += 8 if d.spec["p"]["data_enc"] == "b" else 16
        return raw[:head] + draw(st.binary(max_size=200))
    return draw(st.binary(max_size=200))


def test_damaged_encodings_decode_as_pyiso8583_decodes(dialect):
    @SETTINGS
    @given(damaged_encodings(dialect))
    def check(data):
        assert outcome(dialect.decode, data) == outcome(dialect._slow_decode, data)
        assert outcome(dialect.decode, bytearray(data)) == outcome(dialect._slow_decode, bytearray(data))

    check()


@pytest.mark.parametrize("name, data, fast", [
    # bytes.fromhex skips whitespace, so pyiso8583 reads fewer bitmap bytes than the field has
    ("iso87ascii", b"0100" b"7000 00000000000" b"164242424242424242123456000000000100", False),
    ("iso87ascii", b"0100" b"7000000000000000" b"164242424242424242123456000000000100", True),
    ("iso87ascii", b"0100" b"7000000000000000" b"+64242424242424242123456000000000100", False),  # int("+6")
    ("iso87ascii", b"0100" b"c000000000000000" b"0000000000000000" b"164242424242424242", True),  # lowercase
    ("iso87ascii", b"0100" b"8000000000000000" b"8000000000000000" b"0000000000000000", False),  # tertiary
    ("iso87binary", bytes.fromhex("0100" "4000000000000000" "15" "0411111111111111"), True),
    ("iso87binary", bytes.fromhex("0100" "4000000000000000" "15" "1411111111111111"), False),  # pad not 0
    ("iso87binary", bytes.fromhex("0100" "4000000000000000" "1a" "0411111111111111"), False),  # BCD length
    ("iso93binary", bytes.fromhex("1100" "0000400000000000") + b"\x00\x09" + bytes(8), False),  # trailing bytes
])
def test_unusual_encodings_decode_as_pyiso8583_decodes(name, data, fast):
    d = load_dialect(name)
    assert (d._codec.decode(data) is not None) is fast
    assert outcome(d.decode, data) == outcome(d._slow_decode, data)


@pytest.mark.parametrize("name", SHIPPED)
def test_fast_path_is_taken_for_an_authorization(name, monkeypatch):
    d = load_dialect(name)
    request, answer = authorization(d)
    raw, answer_raw = d.encode(request), d.encode(answer)

    def refuse(*args: Any) -> None:
        raise AssertionError("pyiso8583 was called")

    monkeypatch.setattr(dialect_module.iso8583, "encode", refuse)
    monkeypatch.setattr(dialect_module.iso8583, "decode", refuse)
    assert d.encode(request) == raw and d.encode(answer) == answer_raw
    assert d.decode(raw) == request and d.decode(answer_raw) == answer


def test_a_header_is_left_to_pyiso8583():
    d = load_dialect("iso87ascii")
    spec = {**d.spec, "h": {**d.spec["h"], "max_len": 4}}
    assert compile_codec(spec, d._numeric) is None


def test_a_field_shape_it_does_not_know_goes_to_pyiso8583():
    d = load_dialect("iso87binary")
    spec = {**d.spec, "2": {**d.spec["2"], "len_enc": "b"}}  # binary length prefix: no dialect class has one
    codec = compile_codec(spec, d._numeric)
    assert codec is not None
    assert codec.encode({"t": "0200", "2": "4111"}) is None
    assert codec.encode({"t": "0200", "3": "000000"}) is not None
    assert codec.decode(bytes.fromhex("0200" "4000000000000000" "02" "4111")) is None


def test_an_unknown_charset_is_left_to_pyiso8583():
    d = load_dialect("iso87ascii")
    assert compile_codec({**d.spec, "t": {**d.spec["t"], "data_enc": "nosuch"}}, d._numeric) is None
    codec = compile_codec({**d.spec, "43": {**d.spec["43"], "data_enc": "nosuch"}}, d._numeric)
    assert codec is not None and codec.encode({"t": "0200", "43": "x" * 40}) is None
