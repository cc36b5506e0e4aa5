"""Framing: hand-computed headers, split and coalesced reads, limits, keep-alives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.iso.framing import FRAMING_NAMES, Frame, Framing, FramingError, swap_tpdu

TPDU = bytes.fromhex("6000010002")


@pytest.mark.parametrize(
    "name, header",
    [("2b", b"\x00\x05"), ("4b", b"\x00\x00\x00\x05"), ("2a", b"05"), ("4a", b"0005"), ("2bcd", b"\x00\x05")],
)
def test_headers_by_hand(name, header):
    assert Framing(name).frame(b"hello") == header + b"hello"


def test_2bcd_is_decimal():
    assert Framing("2bcd").frame(b"x" * 1234)[:2] == b"\x12\x34"


def test_tpdu_and_length_including_header():
    f = Framing("2b", tpdu=True, includes_header=True)
    wire = f.frame(b"abc", TPDU)
    assert wire == b"\x00\x0a" + TPDU + b"abc"
    assert list(f.decoder().feed(wire)) == [Frame(b"abc", TPDU)]


def test_reply_tpdu_swaps_source_and_destination():
    assert swap_tpdu(bytes.fromhex("6000010002")) == bytes.fromhex("6000020001")


def test_keepalive_zero_length_frames():
    f = Framing("2b")
    assert list(f.decoder().feed(b"\x00\x00\x00\x01x")) == [Frame(b""), Frame(b"x")]


def test_frame_over_max_raises():
    f = Framing("4a", max_frame=100)
    with pytest.raises(FramingError, match="exceeds max_frame"):
        list(f.decoder().feed(b"0101"))


def test_bad_ascii_header_raises():
    with pytest.raises(FramingError, match="not 4 ASCII digits"):
        list(Framing("4a").decoder().feed(b"12x4"))


def test_unknown_framing_name():
    with pytest.raises(ValueError, match="expected one of 2b, 4b, 2a, 4a, 2bcd"):
        Framing("3b")


@pytest.mark.parametrize("name", FRAMING_NAMES)
@pytest.mark.parametrize("tpdu", [False, True])
def test_split_and_coalesced_reads_round_trip(name, tpdu):
    f = Framing(name, tpdu=tpdu, max_frame=90)

    @settings(max_examples=60, deadline=None)
    @given(
        payloads=st.lists(st.binary(min_size=1, max_size=90), max_size=8),
        cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    )
    def check(payloads, cuts):
        stream = b"".join(f.frame(p, TPDU if tpdu else None) for p in payloads)
        points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
        decoder = f.decoder()
        got = []
        for a, b in zip(points, points[1:]):
            got.extend(decoder.feed(stream[a:b]))
        assert [fr.payload for fr in got] == payloads
        assert all(fr.tpdu == (TPDU if tpdu else None) for fr in got)

    check()
