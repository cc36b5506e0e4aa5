"""Sakura Trust Bank (fictional; the demo's bank_b): ISO 8583:1993 binary, 4a framing.

* Every authorization and sale carries order data in field 48 as TLV: ``01`` merchant
  name, ``02`` order id, ``03`` account holder id (bank accounts that have one), ``04``
  ``1`` when the switch asks that the customer confirm the payment (a risk rule's step-up).  The
  CVV therefore moves to field 126 (see ``specs/dialects/sakura.toml``).  Refunds and
  completions carry field 48 too, with the merchant name (tag ``01``, from field 43):
  the original's order TLV is kept only masked (the dialect marks field 48
  sensitive), so its order id and holder id cannot be repeated.  Reversals point at
  the original through field 56 and carry no order data.
* Some payments need the customer to confirm at the bank: the bank answers action
  code 923 ("request in progress") with the confirmation URL in field 62, and later
  sends a 1220 (sale) or 1120 (pre-authorization) advice with the outcome.  The bank does
  so for its own reasons, or because the request asked for it (TLV ``04``): the plugin
  supports step-up.
"""

from __future__ import annotations

from connectors.base import ConnectorPlugin, PaymentContext, register, tlv
from switch.domain.model import BankAccountInstrument
from switch.iso.dialect import Message

ORDER_FIELD = "48"
CONFIRM_TAG = "04"
URL_FIELD = "62"
PENDING_CUSTOMER = "923"
NAME_LENGTH = 22
"""Field 43 starts with the merchant name, padded to 22 characters (`switch.iso.translate.Acceptor`)."""


@register("sakura")
class Sakura(ConnectorPlugin):
    step_up = True

    def request(self, message: Message, payment: PaymentContext) -> Message:
        holder = payment.instrument.holder_id if isinstance(payment.instrument, BankAccountInstrument) else None
        message[ORDER_FIELD] = tlv([("01", payment.merchant_name), ("02", payment.order_id), ("03", holder or ""),
                                    (CONFIRM_TAG, "1" if payment.step_up else "")])
        return message

    def completion(self, message: Message, original: Message) -> Message:
        return _with_merchant(message)

    def refund(self, message: Message, original: Message) -> Message:
        return _with_merchant(message)

    def confirmation_url(self, response: Message) -> str | None:
        url = response.get(URL_FIELD, "")
        if response.get("39") == PENDING_CUSTOMER and url.startswith(("https://", "http://")):
            return url
        return None


def _with_merchant(message: Message) -> Message:
    name = message.get("43", "")[:NAME_LENGTH].strip()
    if name:
        message[ORDER_FIELD] = tlv([("01", name)])
    return message
