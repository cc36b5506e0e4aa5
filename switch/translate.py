"""Translation between canonical payments and a bank's ISO 8583 messages.

The core mapping lives here and covers what ISO 8583 fixes for every bank; what a
bank does differently (private fields, its own reversal message, a confirmation URL
in field 62) is a connector plugin's business (see `connectors/`).  Time comes in as
a number so translation is a pure function and tests need no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

from switch.api.model import CardInstrument
from switch.dialect import Dialect, Message
from switch.masking import mask_message
from switch.mti import mti_for, transmission_time
from switch.responses import ResponseTable

PURCHASE, REFUND = "00", "20"


@dataclass(frozen=True)
class AcquirerProfile:
    """Per-connector acquiring settings, from the connector's config table. Defaults:

    - ``acquirer_id`` (field 32): required.
    - ``forwarding_id`` (field 90/56 forwarding institution): "" (zero-filled).
    - ``pos_entry_mode`` (field 22): "812" for 1987 (e-commerce, PAN keyed, no PIN);
      "100010S00100" for 1993 (field 22 is the 12-character POS data code there).
    - ``pos_condition_code`` (field 25, 1987 only): "59" (e-commerce).
    - ``reversal`` : "reversal" (0400) or "reversal_advice" (0420).
    """

    dialect: Dialect
    acquirer_id: str
    responses: ResponseTable
    forwarding_id: str = ""
    pos_entry_mode: str | None = None
    pos_condition_code: str = "59"
    reversal: str = "reversal"
    extra_fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return self.dialect.version

    @property
    def entry_mode(self) -> str:
        if self.pos_entry_mode is not None:
            return self.pos_entry_mode
        return "812" if self.version == 1987 else "100010S00100"


@dataclass(frozen=True)
class Acceptor:
    """Who accepts the payment, as the bank knows them (fields 18, 41, 42, 43)."""

    mcc: str
    terminal_id: str
    merchant_id: str
    name: str
    city: str
    country: str

    def name_location(self, version: int) -> str:
        """Field 43: name (22) + space + city (13) + space + country (2), padded to 40 in 1987."""
        text = f"{self.name[:22]:<22} {self.city[:13]:<13} {self.country[:2]:<2}"
        return f"{text:<40}" if version == 1987 else text.rstrip()


def _local(now: float, version: int) -> dict[str, str]:
    t = datetime.fromtimestamp(now, timezone.utc)
    if version == 1987:
        return {"12": t.strftime("%H%M%S"), "13": t.strftime("%m%d")}
    return {"12": t.strftime("%y%m%d%H%M%S")}


def financial_request(
    profile: AcquirerProfile,
    kind: str,
    processing: str,
    amount: int,
    currency_numeric: str,
    card: CardInstrument,
    acceptor: Acceptor,
    stan: str,
    rrn: str,
    now: float,
) -> Message:
    """An authorization (0100), sale/refund (0200) or completion (0220) for a card.

    ``kind`` is an `switch.mti` kind; ``processing`` the transaction type (00, 20).
    The CVV, when the card has one, goes in the dialect's ``cvv_field`` and nowhere else.
    """
    version = profile.version
    msg: Message = {
        "t": mti_for(kind, version),
        "2": card.pan,
        "3": f"{processing}0000",
        "4": f"{amount:012d}",
        "7": transmission_time(now),
        "11": stan,
        **_local(now, version),
        "14": card.expiry,
        "18": acceptor.mcc,
        "22": profile.entry_mode,
        "32": profile.acquirer_id,
        "37": rrn,
        "41": f"{acceptor.terminal_id:<8}"[:8],
        "42": f"{acceptor.merchant_id:<15}"[:15],
        "43": acceptor.name_location(version),
        "49": currency_numeric,
    }
    if version == 1987:
        msg["25"] = profile.pos_condition_code
    else:
        msg["24"] = "200" if kind in ("financial", "financial_advice") else "100"
    if card.cvv and profile.dialect.cvv_field:
        msg[profile.dialect.cvv_field] = card.cvv
    msg.update(profile.extra_fields)
    return msg


ORIGINAL_KEYS = ("2", "3", "4", "7", "11", "12", "13", "14", "32", "37", "41", "42", "49")
"""Fields of an original request kept (PAN encrypted) so a reversal can be built after a crash."""


def reversal_template(original: Mapping[str, str]) -> dict[str, str]:
    """The original request's identifying fields, PAN and expiry masked: what a queued
    reversal keeps in the journal (store-and-forward puts the sealed card back at send time)."""
    return mask_message({k: v for k, v in original.items() if k in ORIGINAL_KEYS or k == "t"})


def original_data_elements(original: Mapping[str, str], profile: AcquirerProfile) -> str:
    """Field 90 (1987, n42) or field 56 (1993, LLVAR n..35) pointing at the original request."""
    acquirer = original.get("32", profile.acquirer_id)
    if profile.version == 1987:
        return (
            f"{original['t']}{original['11']}{original['7']}"
            f"{int(acquirer or 0):011d}{int(profile.forwarding_id or 0):011d}"
        )
    return f"{original['t']}{original['11']}{original['12']}{len(acquirer):02d}{acquirer}"


def reversal_request(original: Mapping[str, str], profile: AcquirerProfile, stan: str, now: float, repeat: bool) -> Message:
    """A reversal of ``original``: its identifying fields, a new STAN, and original data elements.

    The first attempt is 0400 (or 0420); store-and-forward resends as 0401 (0421).
    """
    kind = profile.reversal + ("_repeat" if repeat else "")
    msg: Message = {k: v for k, v in original.items() if k in ("2", "3", "4", "14", "32", "37", "41", "42", "49")}
    msg["t"] = mti_for(kind, profile.version)
    msg["7"] = transmission_time(now)
    msg["11"] = stan
    msg.update(_local(now, profile.version))
    msg[profile.dialect.original_data_field] = original_data_elements(original, profile)
    if profile.version == 1993:
        msg["24"] = "400"
    return msg
