"""The connector plugin interface and the two shipped plugins, without a network."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors import ConnectorPlugin, PaymentContext, UnknownPlugin, plugin_class, register, registered
from connectors.base import parse_tlv, tlv
from switch.domain.model import BankAccountInstrument, CardInstrument, WalletInstrument
from switch.iso.dialect import load_dialect

DIALECTS = Path(__file__).resolve().parents[2] / "specs" / "dialects"
ANGKOR, SAKURA = load_dialect(DIALECTS / "angkor.toml"), load_dialect(DIALECTS / "sakura.toml")
CARD = CardInstrument("4111111111111111", "3012", "123")


def test_shipped_plugins_are_registered_and_unknown_names_list_them():
    assert {"angkor", "sakura"} <= set(registered())
    with pytest.raises(UnknownPlugin, match="unknown connector plugin 'nope'; registered: angkor, sakura"):
        plugin_class("nope")


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        register("angkor")(type("Other", (ConnectorPlugin,), {}))


def test_base_plugin_changes_nothing_and_treats_x120_x220_as_customer_advices():
    plugin = ConnectorPlugin(ANGKOR)
    message = {"t": "0200", "2": CARD.pan}
    assert plugin.request(dict(message), PaymentContext(CARD, "SHOP", "o-1")) == message
    assert plugin.confirmation_url({"t": "0210", "39": "09", "62": "https://x"}) is None
    assert [plugin.is_customer_advice({"t": m}) for m in ("0220", "1120", "1220", "0420", "0200", "0230")] == [
        True, True, True, False, False, False]


def test_angkor_names_the_wallet_provider_in_field_63_and_reverses_with_advices():
    angkor = plugin_class("angkor")(ANGKOR)
    assert angkor.reversal == "reversal_advice"
    wallet = angkor.request({"t": "0200"}, PaymentContext(WalletInstrument("TRUEMONEY", "0812345678"), "S", "o"))
    assert parse_tlv(wallet["63"]) == {"WP": "TRUEMONEY"}
    assert "63" not in angkor.request({"t": "0200"}, PaymentContext(CARD, "S", "o"))


def test_sakura_sends_order_tlv_and_reads_the_confirmation_url():
    sakura = plugin_class("sakura")(SAKURA)
    account = BankAccountInstrument("ABA", "000123456789", holder_id="KH-1234")
    built = sakura.request({"t": "1200"}, PaymentContext(account, "SHOP", "order-7"))
    assert parse_tlv(built["48"]) == {"01": "SHOP", "02": "order-7", "03": "KH-1234"}
    assert sakura.confirmation_url({"t": "1210", "39": "923", "62": "https://bank/confirm/C1"}) == "https://bank/confirm/C1"
    assert sakura.confirmation_url({"t": "1210", "39": "000", "62": "https://bank/confirm/C1"}) is None
    assert sakura.confirmation_url({"t": "1210", "39": "923", "62": "javascript:alert(1)"}) is None


def test_only_sakura_can_ask_for_a_step_up_and_it_does_so_in_its_order_tlv():
    assert not ConnectorPlugin.step_up and not plugin_class("angkor").step_up and plugin_class("sakura").step_up
    sakura = plugin_class("sakura")(SAKURA)
    asked = sakura.request({"t": "1200"}, PaymentContext(CARD, "SHOP", "order-7", step_up=True))
    assert parse_tlv(asked["48"]) == {"01": "SHOP", "02": "order-7", "04": "1"}


def test_sakura_dialect_keeps_the_cvv_out_of_its_order_field():
    assert SAKURA.cvv_field == "126" and SAKURA.fields["102"].sensitive and SAKURA.fields["48"].sensitive


def test_tlv_round_trips():
    @given(st.dictionaries(st.text("ABCDEFGHIJ0123456789", min_size=2, max_size=2),
                           st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40)))
    def check(items):
        assert parse_tlv(tlv(list(items.items()))) == items

    check()


def test_truncated_tlv_is_refused():
    with pytest.raises(ValueError, match="malformed TLV at offset 0"):
        parse_tlv("01010abc")


def test_base_plugin_leaves_completions_refunds_reversals_and_network_messages_alone():
    plugin = ConnectorPlugin(ANGKOR)
    original = {"t": "0200", "2": CARD.pan, "63": "WP009TRUEMONEY"}
    for hook in (plugin.completion, plugin.refund, plugin.reversal_message):
        assert hook({"t": "0420", "11": "000002"}, original) == {"t": "0420", "11": "000002"}
    assert plugin.network({"t": "0800", "70": "301"}) == {"t": "0800", "70": "301"}


def test_angkor_repeats_the_wallet_provider_in_completions_refunds_and_reversals():
    angkor = plugin_class("angkor")(ANGKOR)
    from_field_63 = {"t": "0200", "102": "TRUEMONEY:0812345678", "63": "WP009TRUEMONEY"}
    from_account_only = {"t": "0200", "2": "TRUEMONEY:0812345678", "102": "****5678"}  # as store-and-forward unseals
    for original in (from_field_63, from_account_only):
        for hook in (angkor.completion, angkor.refund, angkor.reversal_message):
            assert parse_tlv(hook({"t": "0420"}, original)["63"]) == {"WP": "TRUEMONEY"}
    card_original = {"t": "0200", "2": CARD.pan}
    assert "63" not in angkor.reversal_message({"t": "0420"}, card_original)


def test_sakura_names_the_merchant_in_refunds_and_completions_but_not_in_reversals():
    sakura = plugin_class("sakura")(SAKURA)
    original = {"t": "1200", "48": "[40 masked]"}
    refund = {"t": "1200", "3": "200000", "43": "E2E SHOP               PHNOM PENH    KH"}
    assert parse_tlv(sakura.refund(dict(refund), original)["48"]) == {"01": "E2E SHOP"}
    assert parse_tlv(sakura.completion({**refund, "t": "1220"}, original)["48"]) == {"01": "E2E SHOP"}
    assert "48" not in sakura.reversal_message({"t": "1420"}, original)
