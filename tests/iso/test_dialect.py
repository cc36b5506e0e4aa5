"""Dialects: fixed byte vectors worked out by hand, round-trip properties, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.iso.dialect import DialectError, MessageError, load_dialect
from switch.iso.masking import mask_message

SHIPPED = ["iso87ascii", "iso87binary", "iso93ascii", "iso93binary"]
PUBLIC_VECTOR = b"01007000000000000000164242424242424242123456000000000100"


def test_public_1987_ascii_vector_decodes():
    d = load_dialect("iso87ascii")
    assert d.decode(PUBLIC_VECTOR) == {"t": "0100", "2": "4242424242424242", "3": "123456", "4": "000000000100"}
    assert d.encode({"t": "0100", "2": "4242424242424242", "3": "123456", "4": "000000000100"}) == PUBLIC_VECTOR


def test_binary_vector_by_hand():
    d = load_dialect("iso87binary")
    raw = d.encode({"t": "0800", "7": "1123113000", "11": "000001", "70": "301"})
    # MTI BCD 08 00; bitmap 82 20 00 00 00 00 00 00 (fields 1, 7, 11) then secondary 04 00.. (field 70)
    assert raw.hex() == (
        "0800" "8220000000000000" "0400000000000000" "1123113000" "000001" "0301"
    )


def test_binary_llnum_odd_length_is_left_padded_bcd():
    d = load_dialect("iso87binary")
    raw = d.encode({"t": "0200", "2": "411111111111111"})  # 15 digits
    assert raw.hex() == "0200" "4000000000000000" "15" "0411111111111111"
    assert d.decode(raw)["2"] == "411111111111111"


def test_1993_formats():
    d = load_dialect("iso93ascii")
    assert d.version == 1993
    raw = d.encode({"t": "1110", "12": "261123113000", "39": "000"})
    assert raw == b"1110" + b"0010000002000000" + b"261123113000" + b"000"
    with pytest.raises(MessageError) as e:
        d.encode({"t": "1110", "39": "00"})
    assert e.value.field == "39"


def test_jpos_packager_name_is_an_alias():
    assert load_dialect("ISO87BPackager").name == "iso87binary"


def test_numeric_field_rejects_letters():
    with pytest.raises(MessageError) as e:
        load_dialect("iso87ascii").encode({"t": "0200", "4": "00000000012A"})
    assert e.value.field == "4"


def test_numeric_fields_that_are_not_text_or_not_digits_are_named_first_in_field_order():
    """A plugin that puts an int in a numeric field gets a `MessageError` naming it (`Engine.check_encodes` turns
    that into ``message_not_encodable``), not an AttributeError; of several, the first by number, whatever the
    hash seed."""
    d = load_dialect("iso87ascii")
    with pytest.raises(MessageError) as e:
        d.encode({"t": "0200", "4": 1250})  # type: ignore[dict-item]
    assert (e.value.field, e.value.reason) == ("4", "expected a string of digits, got int")
    with pytest.raises(MessageError) as e:
        d.encode({"t": "0200", "49": "U$D", "11": "00012X", "4": "00000000012A"})
    assert e.value.field == "4"


def test_truncated_message_names_field_and_offset():
    with pytest.raises(MessageError) as e:
        load_dialect("iso87ascii").decode(PUBLIC_VECTOR[:-3])
    assert e.value.field == "4" and e.value.offset == 44


def test_masking_uses_dialect_sensitivity():
    d = load_dialect("iso87ascii")
    masked = mask_message({"t": "0200", "2": "4111111111111111", "14": "3012", "48": "123", "4": "000000001250"}, d)
    assert masked == {"t": "0200", "2": "411111******1111", "14": "[4 masked]", "48": "[3 masked]", "4": "000000001250"}


def _message_strategy(dialect_name: str):
    d = load_dialect(dialect_name)
    numeric = st.text("0123456789", min_size=1, max_size=19)
    def value_for(n: str):
        f = d.fields[n]
        if f.cls.endswith("NUMERIC"):
            return st.text("0123456789", min_size=f.length, max_size=f.length)
        if f.cls == "IF_CHAR":
            return st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=f.length, max_size=f.length)
        if f.cls.endswith("LLNUM"):
            return numeric.filter(lambda s: len(s) <= f.length)
        return None
    chosen = {n: value_for(n) for n in ("2", "3", "4", "7", "11", "12", "37", "39", "41", "42", "49", "70", "90", "102")}
    chosen["102"] = st.text("ABC123 ", min_size=1, max_size=28)
    return st.fixed_dictionaries(
        {"t": st.sampled_from(["0100", "0200", "0800", "1100", "1804"])},
        optional={n: s for n, s in chosen.items() if s is not None},
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_round_trip_property(name):
    d = load_dialect(name)

    @settings(max_examples=150, deadline=None)
    @given(_message_strategy(name))
    def check(message):
        assert d.decode(d.encode(message)) == message

    check()


@pytest.mark.parametrize("name", SHIPPED)
def test_decoding_garbage_raises_only_message_error(name):
    d = load_dialect(name)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def check(data):
        try:
            d.decode(data)
        except MessageError:
            pass

    check()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bank.toml"
    path.write_text(text)
    return path


def test_bank_dialect_extends_and_overrides(tmp_path):
    path = _write(tmp_path, 'name = "acme"\nextends = "iso87ascii"\n[fields]\n48 = { class = "IFA_LLCHAR", length = 10 }\n')
    d = load_dialect(str(path))
    assert d.name == "acme" and d.fields["48"].cls == "IFA_LLCHAR" and d.fields["48"].sensitive
    assert d.encode({"t": "0200", "48": "123"}) == b"0200" + b"0000000000010000" + b"03123"


@pytest.mark.parametrize(
    "text, expected",
    [
        ('extends = "iso87ascii"\n[fields]\n4 = { class = "IFA_NUMBER", length = 12 }\n', "fields.4.class"),
        ('extends = "iso87ascii"\n[fields]\n4 = { class = "IFA_NUMERIC", length = -1 }\n', "fields.4.length"),
        ('extends = "iso87ascii"\n[fields]\n200 = { class = "IFA_NUMERIC", length = 1 }\n', "fields.200"),
        ('extends = "iso87ascii"\n[fields]\n48 = { class = "IFA_LLCHAR", length = 100 }\n',
         "fields.48.length: 100 does not fit the IFA_LLCHAR length prefix, which says at most 99"),
        ('extends = "iso87ascii"\n[fields]\n96 = { class = "IFA_LLLCHAR", length = 1998 }\n',
         "fields.96.length: 1998 does not fit the IFA_LLLCHAR length prefix, which says at most 999"),
        ('extends = "nosuch"\n', "unknown dialect 'nosuch'"),
        ('extends = "iso87ascii"\nmti = "ebcdic"\n', "mti"),
        ('extends = "iso87ascii"\ncolour = 1\n', "unknown key"),
        ('extends = "iso87ascii"\ncvv_field = "300"\n', "cvv_field"),
        ('name = [', "not valid TOML"),
    ],
)
def test_bad_dialect_file_names_file_key_and_problem(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(DialectError) as e:
        load_dialect(str(path))
    assert str(path) in str(e.value) and expected in str(e.value)


def test_non_digit_mti_is_refused_on_decode():
    with pytest.raises(MessageError) as e:
        load_dialect("iso87ascii").decode(b"02X0" + b"0000000000000000")
    assert e.value.field == "t"
