"""The connector plugin interface: what a bank needs that a dialect file cannot say.

A dialect file describes a bank's fields; a plugin decides what goes into private
fields, how to read bank-specific answers and which reversal message the bank wants.
Every hook has a no-op default, so a plugin overrides only what its bank does
differently.  Plugins register by name and a connector picks one with
``plugin = "name"`` in its ``[[connectors]]`` table; a name that is not registered
(after importing ``connectors.<name>``) stops the switch at start-up.

Hooks run on the reactor thread and must not block.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping, TypeVar

from switch.domain.model import Instrument
from switch.iso.answercheck import read_answer
from switch.iso.dialect import Dialect, Message
from switch.iso.mti import is_request
from switch.iso.responses import BankAnswer, ResponseTable


class UnknownPlugin(LookupError):
    """The configured plugin name is not registered; the message lists those that are."""


@dataclass(frozen=True)
class PaymentContext:
    """What a plugin may see of a payment. The CVV is already in its field and not repeated here."""

    instrument: Instrument
    merchant_name: str
    order_id: str
    step_up: bool = False
    """The risk stage asks that the customer confirm this payment at the bank (only for a plugin
    whose ``step_up`` is True)."""


class ConnectorPlugin:
    """Base class and the behaviour of a connector without a plugin.

    - ``reversal``: ``"reversal"`` (0400/1420) or ``"reversal_advice"`` (0420/1420) to
      override the connector's ``reversal`` setting; None keeps it.
    - ``request``: add or change fields of an authorization or sale before it is
      journalled and sent (private TLVs, bank-specific codes).
    - ``completion``, ``refund``, ``reversal_message``: the same for a capture (completion
      advice), a refund, and a reversal or void (first send and repeats); ``original`` is
      the request being completed, refunded or reversed, as journalled (card put back).
    - ``network``: the same for network management messages (sign-on, echo, cutover).
    - ``reconciliation``: the same for a closed day's reconciliation request (0500/1500) in one
      currency; ``totals`` are the switch's (`switch.domain.settlement.DayTotals` names: counts,
      amounts, ``net``), already in fields 74–89 and 97 (see `switch.iso.totals`).
    - ``read_response``: what the bank's answer to ``request`` says (status, reason, codes,
      amount, confirmation URL); the default (`switch.iso.answercheck.read_answer`) checks that
      the answer echoes the request's identifying fields, then reads field 39 through the
      connector's table. An override should call it first and refine what it returns.
    - ``confirmation_url``: the URL where the customer confirms the payment, when the
      bank's answer means "customer action required"; None for an ordinary answer.
    - ``is_customer_advice``: whether a bank-initiated message completes a payment
      awaiting the customer (default: authorization or financial advices, x120/x220).
    - ``step_up``: True when ``request`` can ask the bank to have the customer confirm a
      payment (``payment.step_up``), which the bank then answers "customer action required"
      (see ``confirmation_url``).  A risk rule with ``action = "step_up"`` uses it; on a
      connector whose plugin cannot, the rule acts as its ``otherwise``.
    """

    name: ClassVar[str] = ""
    reversal: ClassVar[str | None] = None
    step_up: ClassVar[bool] = False

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    def request(self, message: Message, payment: PaymentContext) -> Message:
        return message

    def completion(self, message: Message, original: Message) -> Message:
        return message

    def refund(self, message: Message, original: Message) -> Message:
        return message

    def reversal_message(self, message: Message, original: Message) -> Message:
        return message

    def network(self, message: Message) -> Message:
        return message

    def reconciliation(self, message: Message, totals: Mapping[str, int]) -> Message:
        return message

    def read_response(self, request: Message, response: Message, table: ResponseTable) -> BankAnswer:
        return read_answer(request, response, table, self.confirmation_url(response))

    def confirmation_url(self, response: Message) -> str | None:
        return None

    def is_customer_advice(self, message: Message) -> bool:
        mti = message["t"]
        return is_request(mti) and mti[2] == "2" and mti[1] in "12"


P = TypeVar("P", bound=type[ConnectorPlugin])
_REGISTRY: dict[str, type[ConnectorPlugin]] = {}


def register(name: str) -> Callable[[P], P]:
    """Class decorator: ``@register("angkor") class Angkor(ConnectorPlugin): ...``."""

    def add(cls: P) -> P:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"connector plugin {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def registered() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def plugin_class(name: str) -> type[ConnectorPlugin]:
    """The plugin registered as ``name``, importing ``connectors.<name>`` first if needed."""
    if name not in _REGISTRY and name.isidentifier():
        try:
            importlib.import_module(f"connectors.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"connectors.{name}":
                raise
    if name not in _REGISTRY:
        raise UnknownPlugin(f"unknown connector plugin {name!r}; registered: {', '.join(registered()) or 'none'}")
    return _REGISTRY[name]


def tlv(items: list[tuple[str, str]]) -> str:
    """Two-character tag, three-digit length, value: the private-field layout both example banks use."""
    return "".join(f"{tag}{len(value):03d}{value}" for tag, value in items if value)


def parse_tlv(text: str) -> dict[str, str]:
    """The inverse of `tlv`; raises ValueError on a truncated or malformed field."""
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        tag, length = text[i:i + 2], text[i + 2:i + 5]
        if len(tag) < 2 or not length.isdigit() or i + 5 + int(length) > len(text):
            raise ValueError(f"malformed TLV at offset {i}")
        out[tag] = text[i + 5:i + 5 + int(length)]
        i += 5 + int(length)
    return out
