"""Card data in any field of a message is masked before it is logged or journalled."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from switch.domain.cardcheck import card_numbers, luhn_check_digit
from switch.domain.panscan import looks_like_pan
from switch.iso import masking
from switch.iso.dialect import load_dialect
from switch.iso.masking import mask_card_data, mask_message
from switch.journal.guard import dump_fields
from tests.cardscan import problems

ISO87 = load_dialect("iso87ascii")
VISA = "4111111111111111"


def test_unexpected_pans_and_track_data_in_any_field_are_masked():
    masked = mask_message({
        "t": "0210", "34": VISA, "44": "4111 1111 1111 1111", "63": f"WP005ALIPAYCARD {VISA}",
        "62": f";{VISA}=30121010000?", "104": f"%B{VISA}^DOE/JOHN^3012101?", "120": f"{VISA}D3012101",
    }, ISO87)
    assert masked == {
        "t": "0210", "34": "411111******1111", "44": "4111 11** **** 1111", "63": "WP005ALIPAYCARD 411111******1111",
        "62": "[30 masked]", "104": "[36 masked]", "120": "[24 masked]",
    }
    assert problems(json.dumps(masked)) == []
    assert json.loads(dump_fields("fields", masked)) == masked  # the journal's guard accepts the masked copy


def test_ordinary_numbers_are_left_alone():
    fields = {"t": "0210", "4": "000000001250", "7": "1129083746", "37": "633408000001", "39": "00",
              "90": "020043358911231202380000040000100000000000", "63": "WP009TRUEMONEY", "11": "000123",
              "48": "not sensitive here", "56": "120000012326112908374606400001",
              "44": "4111111111111112"}  # fails Luhn
    assert mask_message(fields) == fields


@st.composite
def pans(draw):
    body = draw(st.text("0123456789", min_size=12, max_size=18))
    pan = body + luhn_check_digit(body)
    separator = draw(st.sampled_from(["", " ", "-"]))
    groups = [pan[i:i + 4] for i in range(0, len(pan), 4)]
    return separator.join(groups)


@given(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20), pans(),
       st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
def test_no_pan_survives_masking_wherever_it_sits(before, pan, after):
    masked = mask_card_data(before + pan + after)
    assert not looks_like_pan(masked)
    assert not looks_like_pan(json.dumps(mask_message({"t": "0110", "63": before + pan + after}, ISO87)))


@given(st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=13, max_size=40) | pans(),
                min_size=1, max_size=8))
def test_a_value_masks_the_same_the_second_time_and_only_values_without_card_data_are_remembered(values):
    """`mask_card_data` remembers long values that hold no card data (a merchant's name and location come in
    every message): whatever it has seen, a value masks as a first scan masks it, and what it keeps holds
    no card number."""
    masking._clean.clear()  # eight values at most: none is dropped by the bound while the test runs
    firsts = [mask_card_data(value) for value in values]
    for _ in range(2):
        assert [mask_card_data(value) for value in values] == firsts
    assert not any(next(card_numbers(value), None) for value in masking._clean)
    assert all(value in masking._clean for value, first in zip(values, firsts) if first == value)
    assert not any(value in masking._clean for value, first in zip(values, firsts) if first != value)


def test_the_values_remembered_are_bounded():
    for number in range(masking._CLEAN_VALUES_KEPT * 3):
        mask_card_data(f"BENCH SHOP {number:08d}")
    assert 0 < len(masking._clean) <= masking._CLEAN_VALUES_KEPT
