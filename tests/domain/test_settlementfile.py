"""The settlement file format: valid lines round-trip, every malformed line gets an error naming
its line and field, and nothing else (no IndexError, no traceback) ever comes out of the parser."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.domain.settlementfile import (
    COLUMNS,
    HEADER,
    TYPES,
    SettlementFileError,
    SettlementLine,
    parse_file,
    render_file,
)

GOOD = SettlementLine("2026-11-29", "133411000001", "000001", "WEB00001", "411111******1111", 1250, "USD", "debit",
                      "000001")

alnum = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", max_size=12)


@st.composite
def lines(draw: st.DrawFn) -> SettlementLine:
    return SettlementLine(
        business_date=draw(st.dates()).isoformat(),
        rrn=draw(alnum),
        stan=draw(st.text("0123456789", min_size=1, max_size=12)),
        terminal=draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=","),
                              max_size=16)),
        card=draw(st.sampled_from(["", "411111******1111", "****6789", "555555******4444", "1234"])),
        amount=draw(st.integers(min_value=0, max_value=999_999_999_999)),
        currency=draw(st.sampled_from(["USD", "KHR", "JPY", "BHD", "EUR"])),
        type=draw(st.sampled_from(TYPES)),
        auth_code=draw(st.text("ABC0123 ", max_size=6)),
    )


@given(st.lists(lines(), max_size=5))
def test_written_files_read_back_as_written(rows: list[SettlementLine]) -> None:
    assert parse_file(render_file(rows)) == rows


BAD_VALUES = {
    "business_date": ["2026-13-01", "2026-02-30", "29/11/2026", "", "2026-1-1", "２０２６-11-29"],
    "rrn": ["1234567890123", "12-34", "ABC DEF"],
    "stan": ["", "12a", "-1", "1234567890123", "１２"],
    "terminal": ["T" * 17, "\x00", "tab\there"],
    "card": ["4111111111111111", "4111-1111", "41111111111111111111"],
    "amount": ["", "-5", "12.50", "1e3", "1234567890123", "+5", " 5"],
    "currency": ["usd", "XXX", "US", ""],
    "type": ["sale", "DEBIT", "", "refund"],
    "auth_code": ["1234567", "ab-1"],
}


@pytest.mark.parametrize("column,value", [(c, v) for c, vs in BAD_VALUES.items() for v in vs])
def test_each_malformed_field_is_named_with_its_line(column: str, value: str) -> None:
    values = GOOD.text().split(",")
    values[COLUMNS.index(column)] = value
    data = f"{HEADER}\n{GOOD.text()}\n{','.join(values)}\n".encode("utf-8")
    with pytest.raises(SettlementFileError) as caught:
        parse_file(data)
    message = str(caught.value)
    if column in ("business_date", "stan", "terminal") and not value.isascii():
        assert message.startswith("line 3: not ASCII"), message
    else:
        assert message.startswith(f"line 3: {column}: "), message
    assert caught.value.line == 3


@given(st.lists(lines(), min_size=1, max_size=3), st.data())
def test_any_mutated_line_parses_or_gets_a_settlement_file_error(rows: list[SettlementLine], data: st.DataObject) -> None:
    text = render_file(rows).decode()
    position = data.draw(st.integers(min_value=0, max_value=len(text)))
    junk = data.draw(st.text(max_size=5))
    mutated = (text[:position] + junk + text[position + data.draw(st.integers(0, 3)):]).encode("utf-8", "replace")
    try:
        parsed = parse_file(mutated)
    except SettlementFileError as e:
        assert re.match(r"line \d+: \S", str(e)), e
        assert 1 <= e.line <= mutated.count(b"\n") + 1
    else:
        assert parse_file(render_file(parsed)) == parsed


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_another_error(data: bytes) -> None:
    try:
        parse_file(data)
    except SettlementFileError:
        pass


@pytest.mark.parametrize("data,expected", [
    (b"", "line 1: expected the header"),
    (b"date,rrn\n", "line 1: expected the header"),
    (f"{HEADER}\n{GOOD.text()}\n\n{GOOD.text()}\n".encode(), "line 3: empty line"),
    (f"{HEADER}\n{GOOD.text()},extra\n".encode(), "line 2: expected 9 comma-separated fields"),
    (f"{HEADER}\n{GOOD.text()[:20]}\n".encode(), "line 2: expected 9 comma-separated fields"),
    (f"{HEADER}\n".encode() + "é".encode("latin-1"), "line 2: not ASCII"),
])
def test_structural_errors(data: bytes, expected: str) -> None:
    with pytest.raises(SettlementFileError, match=f"^{re.escape(expected)}"):
        parse_file(data)


def test_crlf_and_a_missing_last_newline_are_read() -> None:
    assert parse_file(f"{HEADER}\r\n{GOOD.text()}".encode()) == [GOOD]
    assert parse_file(f"{HEADER}\n".encode()) == []
