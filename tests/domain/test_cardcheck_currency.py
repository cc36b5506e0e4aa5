"""Luhn, PAN masking, expiry, scheme from BIN, and the ISO 4217 table."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.domain import cardcheck
from switch.domain.currency import CURRENCIES, by_alpha, by_numeric

digits = st.text(alphabet="0123456789", min_size=1, max_size=25)


@pytest.mark.parametrize(
    "pan",
    ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "3530111333300000", "79927398713"],
)
def test_known_numbers_pass_luhn(pan):
    assert cardcheck.luhn_valid(pan)


@pytest.mark.parametrize("text", ["4111111111111112", "", "4111-1111-1111-1111", "41111111111111１1", "abc"])
def test_wrong_or_non_digit_numbers_fail_luhn(text):
    assert not cardcheck.luhn_valid(text)


@given(st.text(alphabet="0123456789", max_size=25))
def test_luhn_is_the_textbook_sum(number):
    doubled = [sum(divmod(2 * int(d), 10)) if i % 2 else int(d) for i, d in enumerate(reversed(number))]
    assert cardcheck.luhn_valid(number) is (number != "" and sum(doubled) % 10 == 0)


@given(digits)
def test_the_check_digit_completes_any_number(partial):
    assert cardcheck.luhn_valid(partial + cardcheck.luhn_check_digit(partial))


@given(digits, st.data())
def test_changing_one_digit_breaks_luhn(partial, data):
    pan = partial + cardcheck.luhn_check_digit(partial)
    position = data.draw(st.integers(0, len(pan) - 1))
    replacement = data.draw(st.sampled_from([d for d in "0123456789" if d != pan[position]]))
    assert not cardcheck.luhn_valid(pan[:position] + replacement + pan[position + 1 :])


def test_masking_shows_first_six_and_last_four():
    assert cardcheck.mask_pan("4111111111111111") == "411111******1111"
    assert cardcheck.mask_pan("6011000990139424000") == "601100*********4000"
    assert cardcheck.mask_pan("123456789012") == "********9012"
    assert cardcheck.mask_pan("1234") == "****"


@given(st.text(alphabet="0123456789", max_size=30))
def test_masking_keeps_the_length_and_reveals_at_most_bin_and_last_four(pan):
    masked = cardcheck.mask_pan(pan)
    assert len(masked) == len(pan)
    shown = [i for i, char in enumerate(masked) if char != "*"]
    assert all(masked[i] == pan[i] for i in shown)
    assert len(shown) <= 10 and (not pan or len(shown) < len(pan))
    assert all(i < 6 or i >= len(pan) - 4 for i in shown)


def test_pans_inside_free_text_are_redacted_but_other_numbers_are_not():
    text = "order 4111111111111111 rrn 000000000042 phone 123456789012"
    assert cardcheck.redact_pans(text) == "order 411111******1111 rrn 000000000042 phone 123456789012"


@pytest.mark.parametrize(
    "text, redacted",
    [
        ("4012 8888 8888 1881", "4012 88** **** 1881"),
        ("ref 4012-8888-8888-1881.", "ref 4012-88**-****-1881."),
        ("3782 822463 10005", "3782 82**** *0005"),
        ("1234 4012 8888 8888 1881 99", "1234 4012 88** **** 1881 99"),
        ("2026-11-29 08:37:46 amount 000000001250", "2026-11-29 08:37:46 amount 000000001250"),
        ("020000012311231134000000001234500000000000", "020000012311231134000000001234500000000000"),
    ],
)
def test_grouped_pans_are_redacted_keeping_their_separators(text, redacted):
    assert cardcheck.redact_pans(text) == redacted


luhn_numbers = st.text(alphabet="0123456789", min_size=12, max_size=18).map(lambda b: b + cardcheck.luhn_check_digit(b))


@given(luhn_numbers, st.data())
def test_no_grouping_of_a_card_number_survives_redaction(number, data):
    cuts = sorted(data.draw(st.sets(st.integers(1, len(number) - 1), max_size=6)))
    parts = [number[a:b] for a, b in zip([0, *cuts], [*cuts, len(number)])]
    separators = data.draw(st.lists(st.sampled_from(" -"), min_size=len(parts), max_size=len(parts)))
    grouped = parts[0] + "".join(sep + part for sep, part in zip(separators, parts[1:]))
    noise = st.text(alphabet=st.characters(blacklist_characters="0123456789 -"), max_size=5)
    text = data.draw(noise) + grouped + data.draw(noise)
    assert number in cardcheck.card_numbers(text)
    redacted = cardcheck.redact_pans(text)
    assert len(redacted) == len(text)
    assert list(cardcheck.card_numbers(redacted)) == []
    assert number not in redacted.replace(" ", "").replace("-", "")


@pytest.mark.parametrize(
    "digits, plausible",
    [
        ("4012888888881881", True),
        ("378282246310005", True),
        ("5555555555554444", True),
        ("4222222222222", True),
        ("1732871234560", False),  # epoch milliseconds
        ("1234567890123452", False),  # a sequential order number
        ("2026112900000018", False),  # date-prefixed
        ("4012888888881882", False),  # Luhn fails
        ("55555555555544440", False),  # Mastercard issues 16 digits only
    ],
)
def test_plausible_card_numbers_need_luhn_a_scheme_prefix_and_its_length(digits, plausible):
    assert cardcheck.plausible_card_number(digits) is plausible


@pytest.mark.parametrize(
    "expiry, valid",
    [
        ("2812", True),
        ("0001", True),
        ("9912", True),
        ("2800", False),
        ("2813", False),
        ("281", False),
        ("28121", False),
        ("２８12", False),
    ],
)
def test_expiry_is_yymm_with_a_real_month(expiry, valid):
    assert cardcheck.valid_expiry(expiry) is valid


@pytest.mark.parametrize(
    "pan, scheme",
    [
        ("4111111111111111", "visa"),
        ("5555555555554444", "mastercard"),
        ("2221000000000009", "mastercard"),
        ("2720990000000007", "mastercard"),
        ("378282246310005", "amex"),
        ("341111111111111", "amex"),
        ("3530111333300000", "jcb"),
        ("6200000000000005", "unionpay"),
        ("8171999927660000", "unionpay"),
        ("6011111111111117", "discover"),
        ("6445644564456445", "discover"),
        ("6500000000000002", "discover"),
        ("30569309025904", None),
        ("9999999999999995", None),
        ("41", None),
    ],
)
def test_scheme_from_bin(pan, scheme):
    assert cardcheck.scheme(pan) == scheme


@pytest.mark.parametrize(
    "alpha, numeric, exponent",
    [("USD", "840", 2), ("EUR", "978", 2), ("JPY", "392", 0), ("KHR", "116", 2), ("THB", "764", 2),
     ("VND", "704", 0), ("SGD", "702", 2), ("GBP", "826", 2), ("KWD", "414", 3), ("BHD", "048", 3),
     ("CLF", "990", 4), ("XCG", "532", 2)],
)  # fmt: skip
def test_currency_codes_and_exponents(alpha, numeric, exponent):
    currency = by_alpha(alpha)
    assert currency is not None
    assert (currency.numeric, currency.exponent) == (numeric, exponent)
    assert by_numeric(numeric) is currency and by_numeric(int(numeric)) is currency


def test_the_table_is_consistent_and_holds_no_withdrawn_or_unitless_codes():
    assert len(CURRENCIES) > 150
    numerics = [c.numeric for c in CURRENCIES.values()]
    assert len(set(numerics)) == len(numerics)
    for alpha, currency in CURRENCIES.items():
        assert alpha == currency.alpha and len(alpha) == 3 and alpha.isupper()
        assert len(currency.numeric) == 3 and currency.numeric.isdigit()
        assert currency.exponent in (0, 2, 3, 4)
    for gone in ("BGN", "HRK", "ANG", "CUC", "SLL", "ZWL", "XAU", "XXX", "XTS", "XDR"):
        assert by_alpha(gone) is None
    assert by_alpha("usd") is None


def test_amounts_format_with_the_minor_unit():
    assert CURRENCIES["USD"].format(1250) == "12.50 USD"
    assert CURRENCIES["JPY"].format(1250) == "1250 JPY"
    assert CURRENCIES["KWD"].format(5) == "0.005 KWD"


# Non-ASCII characters (a lone surrogate, an Arabic-Indic digit, which is no ASCII digit) stand in for one byte
# each in the scan's shape of the text: the offsets it searches by must stay those of the text.
_OTHER = ["é", "\ud800", "\u0663", "\U0001f600", "\n"]


@given(st.text(alphabet=st.sampled_from([*"0123456789 -ax*\"{}:,", *_OTHER]), max_size=60)
       | st.lists(st.text(alphabet="0123456789 -", max_size=16), max_size=8).map('"x"'.join))
def test_the_quick_card_number_test_says_what_the_full_pattern_says(text):
    """`may_hold_card_number` filters with a cheaper pattern first; it must never change the answer."""
    full = len(text) >= 13 and cardcheck._CANDIDATE.search(text) is not None
    assert cardcheck.may_hold_card_number(text) is full


def _every_window(text):
    """The scan as first written, the reference the faster one must agree with: every run of digit
    groups joined by single spaces or dashes, every window of whole groups of 13-19 digits."""
    found = []
    for run in re.finditer(r"(?<![0-9])[0-9]+(?:[ -][0-9]+)*", text):
        groups = re.findall(r"[0-9]+", run.group())
        for first in range(len(groups)):
            number = ""
            for group in groups[first:]:
                number += group
                if len(number) > 19:
                    break
                if len(number) >= 13 and cardcheck.luhn_valid(number):
                    found.append(number)
    return found


scanned_text = st.lists(
    st.text(alphabet=st.sampled_from([*"0123456789 -x\"", *_OTHER]), max_size=25) | luhn_numbers, max_size=6
).map("".join)


@given(scanned_text)
def test_card_numbers_finds_every_window_a_plain_scan_of_every_run_finds(text):
    """The scan skips short runs inside the regex engine (`cardcheck._long_runs`); it must find the same."""
    assert list(cardcheck.card_numbers(text)) == _every_window(text)
