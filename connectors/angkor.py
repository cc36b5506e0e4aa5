"""Angkor Commercial Bank (fictional; the demo's bank_a): ISO 8583:1987 ASCII, 2b framing with a TPDU.

Its specification asks for two things a dialect file cannot say:

* wallet payments name the wallet provider again in field 63 (TLV tag ``WP``), which
  the bank routes on before it parses field 102;
* reversals are sent as reversal advices (0420, repeats 0421), never 0400.
"""

from __future__ import annotations

from connectors.base import ConnectorPlugin, PaymentContext, register, tlv
from switch.api.model import WalletInstrument
from switch.dialect import Message

PRIVATE_FIELD = "63"


@register("angkor")
class Angkor(ConnectorPlugin):
    reversal = "reversal_advice"

    def request(self, message: Message, payment: PaymentContext) -> Message:
        if isinstance(payment.instrument, WalletInstrument):
            message[PRIVATE_FIELD] = tlv([("WP", payment.instrument.provider)])
        return message
