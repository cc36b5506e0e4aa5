"""The simulated issuer's cardholder accounts, read from a TOML file.

Loading checks every entry and names the file, the account and the key on a
mistake, because a typo in a test card should stop the simulator at start-up
rather than turn into a puzzling ``14`` in the middle of an integration test.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switch.domain.cardcheck import valid_expiry
from switch.domain.currency import Currency, by_alpha

DEFAULT_ACCOUNTS = Path(__file__).resolve().parents[3] / "config" / "banksim-accounts.toml"

STATUSES = ("active", "blocked", "do_not_honour", "confirm")
_KEYS = {"pan", "account", "expiry", "cvv", "status", "balance", "currency", "limit", "note"}
_REQUIRED = ("pan", "expiry", "cvv", "balance", "currency")
_REQUIRED_ACCOUNT = ("account", "balance", "currency")
_ACCOUNT = re.compile(r"[A-Za-z0-9:/-]{4,28}")
NO_EXPIRY = "9912"
"""What a bank account or wallet (which has no expiry) is given, so card checks pass it by."""


class AccountsError(ValueError):
    """The accounts file is wrong; the message names the file, the account and the key."""


@dataclass(frozen=True)
class Account:
    """One card, bank account or wallet as the issuer knows it. ``balance`` and ``limit`` are in minor units.

    ``pan`` is the card number, or for an ``account = "..."`` entry the account number
    or ``PROVIDER:wallet_id`` exactly as it arrives in field 102.
    """

    pan: str
    expiry: str
    cvv: str
    status: str
    balance: int
    currency: Currency
    limit: int | None = None
    note: str = ""


def _integer(where: str, key: str, value: Any, minimum: int | None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise AccountsError(f"{where}.{key}: got {value!r}; expected an integer amount in minor units")
    if minimum is not None and value < minimum:
        raise AccountsError(f"{where}.{key}: got {value}; expected at least {minimum}")
    return value


def _digits(where: str, key: str, value: Any, lengths: range) -> str:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) not in lengths:
        raise AccountsError(
            f"{where}.{key}: got {value!r}; expected a string of {lengths.start} to {lengths.stop - 1} digits"
        )
    return value


def _account(where: str, raw: Any) -> Account:
    if not isinstance(raw, dict):
        raise AccountsError(f"{where}: expected a table with keys {sorted(_KEYS)}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise AccountsError(f"{where}: unknown key(s) {sorted(unknown)}; expected only {sorted(_KEYS)}")
    if "pan" in raw and "account" in raw:
        raise AccountsError(f"{where}: expected one of pan (a card) or account (a bank account or wallet), not both")
    missing = [k for k in (_REQUIRED_ACCOUNT if "account" in raw else _REQUIRED) if k not in raw]
    if missing:
        raise AccountsError(f"{where}: missing key(s) {missing}")
    if "account" in raw:
        pan = raw["account"]
        if not isinstance(pan, str) or not _ACCOUNT.fullmatch(pan):
            raise AccountsError(f"{where}.account: got {pan!r}; expected 4-28 letters, digits, ':', '/' or '-'")
        raw = {"expiry": NO_EXPIRY, "cvv": "000", **raw}
    else:
        pan = _digits(where, "pan", raw["pan"], range(12, 20))
    expiry = raw["expiry"]
    if not isinstance(expiry, str) or not valid_expiry(expiry):
        raise AccountsError(f"{where}.expiry: got {expiry!r}; expected a YYMM string such as \"3012\"")
    cvv = _digits(where, "cvv", raw["cvv"], range(3, 5))
    status = raw.get("status", "active")
    if status not in STATUSES:
        raise AccountsError(f"{where}.status: got {status!r}; expected one of {', '.join(STATUSES)}")
    currency = by_alpha(raw["currency"]) if isinstance(raw["currency"], str) else None
    if currency is None:
        raise AccountsError(f"{where}.currency: got {raw['currency']!r}; expected an ISO 4217 alpha code such as \"USD\"")
    limit = raw.get("limit")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise AccountsError(f"{where}.note: expected a string")
    return Account(
        pan=pan,
        expiry=expiry,
        cvv=cvv,
        status=status,
        balance=_integer(where, "balance", raw["balance"], None),
        currency=currency,
        limit=None if limit is None else _integer(where, "limit", limit, 0),
        note=note,
    )


def load_accounts(path: Path | str = DEFAULT_ACCOUNTS) -> dict[str, Account]:
    """Accounts by PAN from a file of ``[[account]]`` tables (see config/banksim-accounts.toml)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise AccountsError(f"{path}: accounts file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise AccountsError(f"{path}: not valid TOML: {e}") from None
    unknown = set(doc) - {"account"}
    if unknown:
        raise AccountsError(f"{path}: unknown key(s) {sorted(unknown)}; expected only [[account]] tables")
    entries = doc.get("account", [])
    if not isinstance(entries, list) or not entries:
        raise AccountsError(f"{path}: expected at least one [[account]] table")
    accounts: dict[str, Account] = {}
    for index, raw in enumerate(entries, start=1):
        account = _account(f"{path}: account #{index}", raw)
        if account.pan in accounts:
            raise AccountsError(f"{path}: account #{index}.pan: the same PAN is already listed earlier")
        accounts[account.pan] = account
    return accounts
