"""Angkor Commercial Bank (fictional; the demo's bank_a): ISO 8583:1987 ASCII, 2b framing with a TPDU.

Its specification asks for two things a dialect file cannot say:

* wallet payments name the wallet provider again in field 63 (TLV tag ``WP``), which
  the bank routes on before it parses field 102 -- in every message about a wallet
  payment: the sale or authorization, its completion, refunds and reversals (those
  take the provider from the original request, so a reversal rebuilt after a crash
  carries it too);
* reversals are sent as reversal advices (0420, repeats 0421), never 0400.
"""

from __future__ import annotations

from connectors.base import ConnectorPlugin, PaymentContext, parse_tlv, register, tlv
from switch.domain.model import WalletInstrument
from switch.iso.dialect import Message
from switch.iso.translate import ACCOUNT_FIELD

PRIVATE_FIELD = "63"
PROVIDER_TAG = "WP"


@register("angkor")
class Angkor(ConnectorPlugin):
    reversal = "reversal_advice"

    def request(self, message: Message, payment: PaymentContext) -> Message:
        if isinstance(payment.instrument, WalletInstrument):
            message[PRIVATE_FIELD] = tlv([(PROVIDER_TAG, payment.instrument.provider)])
        return message

    def completion(self, message: Message, original: Message) -> Message:
        return _with_provider(message, original)

    def refund(self, message: Message, original: Message) -> Message:
        return _with_provider(message, original)

    def reversal_message(self, message: Message, original: Message) -> Message:
        return _with_provider(message, original)


def _with_provider(message: Message, original: Message) -> Message:
    provider = wallet_provider(original)
    if provider:
        message[PRIVATE_FIELD] = tlv([(PROVIDER_TAG, provider)])
    return message


def wallet_provider(original: Message) -> str | None:
    """The wallet provider of an original request: its field 63, else its ``PROVIDER:wallet``
    account reference (field 102, or field 2 where store-and-forward unsealed it); None for a card."""
    try:
        provider = parse_tlv(original.get(PRIVATE_FIELD, "")).get(PROVIDER_TAG)
    except ValueError:
        provider = None
    if provider:
        return provider
    for field in (ACCOUNT_FIELD, "2"):
        name, sep, _ = original.get(field, "").partition(":")
        if sep and name:
            return name
    return None
