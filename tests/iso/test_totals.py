"""A day's totals on the wire (0500/1500, 0510/1510): written and read back in both dialect versions."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.iso.dialect import load_dialect
from switch.iso.totals import TotalsError, compared, read_net, read_totals, request_fields

NAMES = ("debits_count", "debits_amount", "debit_reversals_count", "debit_reversals_amount", "credits_count",
         "credits_amount", "credit_reversals_count", "credit_reversals_amount", "authorizations_count",
         "authorization_reversals_count")
counts = st.integers(min_value=0, max_value=9_999_999_999)
amounts = st.integers(min_value=0, max_value=10**15)


@given(st.fixed_dictionaries({n: counts if n.endswith("count") else amounts for n in NAMES}),
       st.sampled_from(["iso87ascii", "iso87binary", "iso93ascii", "iso93binary", "angkor", "sakura"]))
def test_totals_survive_encoding_in_every_shipped_dialect(totals, name):
    dialect = load_dialect(name)
    totals = {**totals, "net": totals["debits_amount"] - totals["debit_reversals_amount"] - totals["credits_amount"]
              + totals["credit_reversals_amount"]}
    mti = "0500" if dialect.version == 1987 else "1500"
    message = {"t": mti, "11": "000001", **request_fields(totals, "840", date(2026, 6, 15), dialect.version)}
    decoded = dialect.decode(dialect.encode(message))
    assert decoded["15"] == "0615" and decoded["50"] == "840"
    assert read_totals(decoded, dialect.version) == {n: totals[n] for n in compared(dialect.version)}
    if dialect.version == 1993:
        assert decoded["28"] == "260615"


@given(st.text(max_size=20))
def test_a_net_that_is_not_sign_and_digits_is_a_specific_error(text):
    try:
        value = read_net(text)
    except TotalsError as e:
        assert "field 97" in str(e)
    else:
        assert text[0] in "CD" and abs(value) == int(text[1:])


def test_the_net_sign_and_unreadable_counts():
    assert read_net("C0000000000000150") == 150 and read_net("D0000000000000150") == -150
    with pytest.raises(TotalsError, match=r"field 76 \(debits_count\)"):
        read_totals({"76": "12x"}, 1987)
    assert "authorization_reversals_count" not in compared(1987)
    assert "authorization_reversals_count" in compared(1993)
