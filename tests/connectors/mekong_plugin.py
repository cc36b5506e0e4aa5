"""A third bank's plugin, as a bank integrator would write it: nothing outside `connectors/`'s interface.

"Mekong Savings Bank" wants its private field 63 in refunds and reversals (and voids):
TLV ``OS`` the original's STAN, ``MT`` the message's purpose; and its acquirer id (TLV
``AQ``) in field 63 of network-management messages.  Registered under a test
name so it never clashes with a shipped plugin.
"""

from __future__ import annotations

from connectors.base import ConnectorPlugin, register, tlv
from switch.iso.dialect import Message

NAME = "mekong_test"
PRIVATE_FIELD = "63"


@register(NAME)
class Mekong(ConnectorPlugin):
    def refund(self, message: Message, original: Message) -> Message:
        message[PRIVATE_FIELD] = tlv([("OS", original.get("11", "")), ("MT", "REFUND")])
        return message

    def reversal_message(self, message: Message, original: Message) -> Message:
        message[PRIVATE_FIELD] = tlv([("OS", original.get("11", "")), ("MT", "REVERSAL")])
        return message

    def network(self, message: Message) -> Message:
        message[PRIVATE_FIELD] = tlv([("AQ", "400001"), ("MT", "NETWORK")])
        return message
