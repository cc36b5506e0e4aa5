"""Translation between canonical payments and a bank's ISO 8583 messages.

The core mapping lives here and covers what ISO 8583 fixes for every bank; what a
bank does differently (private fields, its own reversal message, a confirmation URL
in field 62) is a connector plugin's business (see `connectors/`).  Time comes in as
a number so translation is a pure function and tests need no clock.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Mapping

from switch.domain.cardcheck import mask_last4
from switch.domain.carddata import AccountData, CardData
from switch.domain.merchant import MerchantConfig, StoreConfig
from switch.domain.model import ACCOUNT_TYPES, BankAccountInstrument, CardInstrument, Instrument, WalletInstrument
from switch.iso.dialect import Dialect, Message
from switch.iso.masking import mask_message
from switch.iso.mti import local_time_fields, mti_for, transmission_time
from switch.iso.responses import ResponseTable

PURCHASE, REFUND = "00", "20"
ACCOUNT_FIELD = "102"
"""Account identification 1: the customer's bank account, or ``PROVIDER:wallet_id`` for a wallet."""


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

    @classmethod
    def of(cls, merchant: MerchantConfig, store: StoreConfig) -> Acceptor:
        return cls(mcc=merchant.mcc, terminal_id=store.terminal_id, merchant_id=merchant.acquirer_merchant_id,
                   name=merchant.name, city=merchant.city, country=merchant.country)

    def name_location(self, version: int) -> str:
        """Field 43: name (22) + space + city (13) + space + country (2), padded to 40 in 1987."""
        text = f"{self.name[:22]:<22} {self.city[:13]:<13} {self.country[:2]:<2}"
        return f"{text:<40}" if version == 1987 else text.rstrip()


@functools.lru_cache(maxsize=1024)
def _acceptor_fields(acceptor: Acceptor, version: int) -> dict[str, str]:
    """Fields 18, 41, 42 and 43 of a store, formatted once: every payment of the store shares the same
    strings, and a payment waiting on its bank keeps its message (about 200 bytes each otherwise).
    Callers copy the dict into their message and never change it."""
    return {
        "18": acceptor.mcc,
        "41": f"{acceptor.terminal_id:<8}"[:8],
        "42": f"{acceptor.merchant_id:<15}"[:15],
        "43": acceptor.name_location(version),
    }


@functools.lru_cache(maxsize=64)
def _processing_code(processing: str, from_account: str) -> str:
    """Field 3, one string per code for all payments that carry it."""
    return f"{processing}{from_account}00"


def account_reference(instrument: BankAccountInstrument | WalletInstrument) -> str:
    """What field 102 carries for a non-card instrument (and what the journal seals to reverse it)."""
    if isinstance(instrument, WalletInstrument):
        return f"{instrument.provider}:{instrument.wallet_id}"
    return instrument.account


def sealed_instrument(instrument: Instrument) -> CardData:
    """The instrument as the journal seals it: a card, or the account reference as `AccountData`."""
    if isinstance(instrument, CardInstrument):
        return CardData(instrument.pan, instrument.expiry)
    return AccountData(account_reference(instrument))


def instrument_from_sealed(sealed: CardData, sent: Mapping[str, str]) -> Instrument:
    """Rebuild an instrument for a later message (capture, refund) from the sealed data and the
    request as journalled (processing code for the account type)."""
    if not isinstance(sealed, AccountData):
        return CardInstrument(sealed.pan, sealed.expiry or "")
    provider, sep, wallet_id = sealed.pan.partition(":")
    if sep:
        return WalletInstrument(provider, wallet_id)
    from_type = sent.get("3", "000000")[2:4]
    account_type = next((name for name, code in ACCOUNT_TYPES.items() if code == from_type), None)
    return BankAccountInstrument(bank="", account=sealed.pan, account_type=account_type)


def restore_instrument(message: dict[str, str], sealed: CardData) -> None:
    """Put clear card or account data back into a journalled (masked) message."""
    if isinstance(sealed, AccountData):
        message[ACCOUNT_FIELD] = sealed.pan
        return
    message["2"] = sealed.pan
    if sealed.expiry:
        message["14"] = sealed.expiry


def financial_request(
    profile: AcquirerProfile,
    kind: str,
    processing: str,
    amount: int,
    currency_numeric: str,
    instrument: Instrument,
    acceptor: Acceptor,
    stan: str,
    rrn: str,
    now: float,
) -> Message:
    """An authorization (0100), sale/refund (0200) or completion (0220).

    ``kind`` is an `switch.iso.mti` kind; ``processing`` the transaction type (00, 20).
    A card goes in fields 2 and 14, its CVV in the dialect's ``cvv_field`` and nowhere
    else.  A bank account or wallet goes in field 102 (see `account_reference`), with
    the account type as the from-account digits of field 3 (10 savings, 20 checking,
    00 unspecified and for wallets).
    """
    version = profile.version
    from_account = "00"
    if isinstance(instrument, BankAccountInstrument) and instrument.account_type is not None:
        from_account = ACCOUNT_TYPES[instrument.account_type]
    msg: Message = {
        "t": mti_for(kind, version),
        "3": _processing_code(processing, from_account),
        "4": f"{amount:012d}",
        "7": transmission_time(now),
        "11": stan,
        **local_time_fields(now, version),
        **_acceptor_fields(acceptor, version),
        "22": profile.entry_mode,
        "32": profile.acquirer_id,
        "37": rrn,
        "49": currency_numeric,
    }
    if isinstance(instrument, CardInstrument):
        msg["2"] = instrument.pan
        msg["14"] = instrument.expiry
        if instrument.cvv and profile.dialect.cvv_field:
            msg[profile.dialect.cvv_field] = instrument.cvv
    else:
        msg[ACCOUNT_FIELD] = account_reference(instrument)
    if version == 1987:
        msg["25"] = profile.pos_condition_code
    else:
        msg["24"] = "200" if kind in ("financial", "financial_advice") else "100"
    msg.update(profile.extra_fields)
    return msg


def carries_accounts(dialect: Dialect) -> bool:
    """A bank may receive bank accounts and wallets only if its dialect masks field 102:
    otherwise logs, traces and the journal would hold the full account number."""
    spec = dialect.fields.get(ACCOUNT_FIELD)
    return spec is not None and spec.sensitive


PRIVATE_KEYS = ("48", "63")
"""Private fields a connector plugin may rebuild a later message from (angkor's wallet provider TLV in 63)."""
ORIGINAL_KEYS = ("2", "3", "4", "7", "11", "12", "13", "14", "32", "37", "41", "42", "49", ACCOUNT_FIELD, *PRIVATE_KEYS)
"""Fields of an original request kept (card or account sealed) so a reversal can be built after a crash."""


def reversal_template(original: Mapping[str, str], dialect: Dialect | None = None) -> dict[str, str]:
    """The original request's identifying fields, PAN, expiry and account masked: what a queued
    reversal keeps in the journal (store-and-forward puts the sealed card back at send time).

    A private field (`PRIVATE_KEYS`) is kept only when the bank's ``dialect`` says it is not
    sensitive: field 48 is the CVV in the generic dialects, and a masked value helps no plugin."""
    fields = dialect.fields if dialect is not None else {}
    kept = {k: v for k, v in original.items()
            if k == "t" or (k in ORIGINAL_KEYS and (k not in PRIVATE_KEYS or (k in fields and not fields[k].sensitive)))}
    template = mask_message(kept, dialect)
    if ACCOUNT_FIELD in template:
        template[ACCOUNT_FIELD] = mask_last4(original[ACCOUNT_FIELD])
    return template


def original_data_elements(original: Mapping[str, str], profile: AcquirerProfile) -> str:
    """Field 90 (1987, n42) or field 56 (1993, LLVAR n..35) pointing at the original request."""
    acquirer = original.get("32", profile.acquirer_id)
    if profile.version == 1987:
        return (
            f"{original['t']}{original['11']}{original['7']}"
            f"{int(acquirer or 0):011d}{int(profile.forwarding_id or 0):011d}"
        )
    return f"{original['t']}{original['11']}{original['12']}{len(acquirer):02d}{acquirer}"


def original_reference(value: str | None) -> tuple[str, str] | None:
    """(original MTI, original STAN) from field 90 or 56, whose first ten digits are both in
    either layout; None when the field is absent or malformed."""
    if not value or len(value) < 10 or not value[:10].isdigit():
        return None
    return value[:4], value[4:10]


def reversal_request(original: Mapping[str, str], profile: AcquirerProfile, stan: str, now: float, repeat: bool) -> Message:
    """A reversal of ``original``: its identifying fields, a new STAN, and original data elements.

    The first attempt is 0400 (or 0420); store-and-forward resends as 0401 (0421).
    Store-and-forward puts whatever it unsealed into field 2; when the original was an
    account payment (its template has field 102) that value is the account and goes
    back to field 102.
    """
    kind = profile.reversal + ("_repeat" if repeat else "")
    copied = ("2", "3", "4", "14", "32", "37", "41", "42", "49", ACCOUNT_FIELD)
    msg: Message = {k: v for k, v in original.items() if k in copied}
    if ACCOUNT_FIELD in msg and "2" in msg:
        msg[ACCOUNT_FIELD] = msg.pop("2")
    msg["t"] = mti_for(kind, profile.version)
    msg["7"] = transmission_time(now)
    msg["11"] = stan
    msg.update(local_time_fields(now, profile.version))
    msg[profile.dialect.original_data_field] = original_data_elements(original, profile)
    if profile.version == 1993:
        msg["24"] = "400"
    return msg
