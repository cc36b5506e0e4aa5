"""Translation: canonical payment -> ISO request fields, reversal field 90/56, by hand."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from switch.domain.merchant import MerchantConfig, StoreConfig
from switch.domain.model import CardInstrument
from switch.iso.dialect import load_dialect
from switch.iso.mti import local_time_fields, transmission_time
from switch.iso.responses import ResponseTable
from switch.iso.translate import Acceptor, AcquirerProfile, financial_request, reversal_request, reversal_template

NOW = datetime(2026, 11, 23, 11, 30, 5, tzinfo=timezone.utc).timestamp()
ACCEPTOR = Acceptor("5999", "WEB00001", "000000000100001", "KSWITCH DEMO SHOP", "PHNOM PENH", "KH")
CARD = CardInstrument("4111111111111111", "3012", "123")


def _profile(name: str) -> AcquirerProfile:
    d = load_dialect(name)
    return AcquirerProfile(d, "400001", ResponseTable.for_version(d.version))


def test_1987_sale_fields():
    p = _profile("iso87ascii")
    m = financial_request(p, "financial", "00", 1250, "840", CARD, ACCEPTOR, "000042", "633011000042", NOW)
    assert m["t"] == "0200" and m["3"] == "000000" and m["4"] == "000000001250"
    assert m["7"] == "1123113005" and m["12"] == "113005" and m["13"] == "1123"
    assert m["22"] == "812" and m["25"] == "59" and m["48"] == "123" and m["49"] == "840"
    assert m["43"] == "KSWITCH DEMO SHOP      PHNOM PENH    KH " and len(m["43"]) == 40
    p.dialect.decode(p.dialect.encode(m))


def test_payments_of_one_store_share_their_acceptor_and_processing_strings():
    """A payment waiting on its bank keeps its message: fields that are the same for every payment of a
    store are one string for all of them, not one copy each."""
    p = _profile("iso87ascii")
    same = Acceptor.of(*_merchant_and_store())
    first = financial_request(p, "financial", "00", 1250, "840", CARD, same, "000042", "633011000042", NOW)
    second = financial_request(p, "financial", "00", 990, "840", CARD, Acceptor.of(*_merchant_and_store()),
                               "000043", "633011000043", NOW + 1)
    for field in ("3", "18", "41", "42", "43"):
        assert first[field] is second[field], field
    assert (first["41"], first["42"]) == ("WEB00001", "000000000100001")
    assert first["43"] == ACCEPTOR.name_location(1987)


def _merchant_and_store() -> tuple[MerchantConfig, StoreConfig]:
    store = StoreConfig(id="web", terminal_id="WEB00001")
    merchant = MerchantConfig(id="M100", name="KSWITCH DEMO SHOP", mcc="5999", city="PHNOM PENH", country="KH",
                              acquirer_merchant_id="000000000100001", stores={"web": store})
    return merchant, store


def test_1987_reversal_field_90_by_hand():
    p = _profile("iso87ascii")
    original = financial_request(p, "financial", "00", 1250, "840", CARD, ACCEPTOR, "000042", "633011000042", NOW)
    r = reversal_request(original, p, "000043", NOW + 30, repeat=False)
    assert r["t"] == "0400" and r["11"] == "000043" and r["37"] == "633011000042" and r["4"] == "000000001250"
    assert r["90"] == "0200" "000042" "1123113005" "00000400001" "00000000000"
    assert "48" not in r  # the CVV never travels in a reversal
    assert reversal_request(original, p, "000044", NOW + 60, repeat=True)["t"] == "0401"


def test_1993_sale_and_reversal():
    p = _profile("iso93binary")
    original = financial_request(p, "authorization", "00", 500, "392", CARD, ACCEPTOR, "000007", "633011000007", NOW)
    assert original["t"] == "1100" and original["12"] == "261123113005" and original["24"] == "100"
    r = reversal_request(original, p, "000008", NOW, repeat=False)
    assert r["t"] == "1420" and r["56"] == "1100" "000007" "261123113005" "06" "400001"
    p.dialect.decode(p.dialect.encode(r))


def test_reversal_template_keeps_the_private_fields_the_dialect_does_not_call_sensitive():
    sakura = load_dialect(Path(__file__).resolve().parents[2] / "specs" / "dialects" / "sakura.toml")
    original = {"t": "1200", "2": "4111111111111111", "14": "3012", "4": "000000001250", "11": "000007",
                "48": "01008E2E SHOP", "63": "WP009TRUEMONEY", "126": "123", "43": "E2E SHOP"}
    assert reversal_template(original, sakura) == {"t": "1200", "2": "411111******1111", "14": "[4 masked]",
                                                   "4": "000000001250", "11": "000007", "63": "WP009TRUEMONEY"}
    card_in_48 = {"t": "0200", "2": "4111111111111111", "48": "123", "63": "WP009TRUEMONEY"}  # 48 is the CVV here
    assert "48" not in reversal_template(card_in_48, load_dialect("iso87ascii"))
    assert "48" not in reversal_template(card_in_48) and "63" not in reversal_template(card_in_48)


@given(st.integers(0, 4_102_444_799), st.integers(0, 999_000))
def test_time_fields_are_the_utc_second_of_now(second: int, microsecond: int) -> None:
    """Fields 7, 12 and 13 are formatted once a second (`mti._utc_texts`): the same texts as `now` itself."""
    now = second + microsecond / 1_000_000
    t = datetime.fromtimestamp(now, timezone.utc)
    assert transmission_time(now) == t.strftime("%m%d%H%M%S")
    assert local_time_fields(now, 1987) == {"12": t.strftime("%H%M%S"), "13": t.strftime("%m%d")}
    assert local_time_fields(now, 1993) == {"12": t.strftime("%y%m%d%H%M%S")}
