"""A card number or account number in the clear: what the journal seals and later messages need.

`CardData` (a PAN and expiry) and `AccountData` (a bank account or wallet reference) only
ever live in memory; the journal seals them (`switch.journal.vault`), the engine reveals
them for a reversal, completion or refund. Nothing here can hold a CVV, track data or a
PIN block, and ``repr`` shows only the masked number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from switch.domain.cardcheck import mask_pan, valid_expiry, valid_pan
from switch.domain.errors import InvalidValue


@dataclass(frozen=True, repr=False)
class CardData:
    """A clear PAN and expiry, only ever held in memory.

    There is deliberately no field for CVV, track data or PIN: the journal has no
    way to receive them. ``repr`` shows the masked PAN so it is safe in logs.
    """

    pan: str
    expiry: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pan, str) or not valid_pan(self.pan):
            raise InvalidValue("PAN must be 12-19 digits passing the Luhn check")
        if self.expiry is not None and (not isinstance(self.expiry, str) or not valid_expiry(self.expiry)):
            raise InvalidValue("expiry must be YYMM")

    @property
    def masked(self) -> str:
        return mask_pan(self.pan)

    def __repr__(self) -> str:
        return f"CardData(pan={self.masked!r}, expiry={'set' if self.expiry else None})"


_ACCOUNT = re.compile(r"[A-Za-z0-9:/-]{4,28}")


@dataclass(frozen=True, repr=False)
class AccountData(CardData):
    """A bank account number or wallet id, exactly as the bank receives it (field 102).

    It rides in `CardData`'s ``pan`` slot on purpose: every journal path that seals,
    hashes and masks a PAN then protects an account number the same way, with no
    second code path to get wrong.  It is not Luhn-checked and masks to its last four.
    """

    def __post_init__(self) -> None:
        if not isinstance(self.pan, str) or not _ACCOUNT.fullmatch(self.pan):
            raise InvalidValue("account must be 4-28 letters, digits, ':', '/' or '-'")
        if self.expiry is not None:
            raise InvalidValue("an account has no expiry")

    @property
    def masked(self) -> str:
        return "*" * (len(self.pan) - 4) + self.pan[-4:]

    def __repr__(self) -> str:
        return f"AccountData(account={self.masked!r})"
