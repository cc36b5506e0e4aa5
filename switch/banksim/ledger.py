"""Balances and holds of the simulated issuer's accounts: the only place money moves.

Amounts are integers in the account currency's minor units.  A hold (from a
pre-authorization) does not change the balance, only what is available to spend,
which is what an insufficient-funds decision looks at.
"""

from __future__ import annotations

from typing import Mapping

from switch.banksim.accounts import Account


class Ledger:
    def __init__(self, accounts: Mapping[str, Account]) -> None:
        self._accounts = dict(accounts)
        self._balances = {pan: account.balance for pan, account in accounts.items()}
        self._held = dict.fromkeys(accounts, 0)
        self._holds: dict[int, tuple[str, int]] = {}

    def account(self, pan: str) -> Account | None:
        return self._accounts.get(pan)

    def balance(self, pan: str) -> int:
        """Ledger balance: approved sales and completions debited, refunds credited."""
        return self._balances[pan]

    def available(self, pan: str) -> int:
        """What the cardholder can still spend: balance less open holds."""
        return self._balances[pan] - self._held[pan]

    def debit(self, pan: str, amount: int) -> None:
        self._balances[pan] -= amount

    def credit(self, pan: str, amount: int) -> None:
        self._balances[pan] += amount

    def hold(self, hold_id: int, pan: str, amount: int) -> None:
        self._holds[hold_id] = (pan, amount)
        self._held[pan] += amount

    def release(self, hold_id: int) -> int:
        """Drop a hold (completed, reversed or expired); the amount it held, 0 if none was open."""
        pan, amount = self._holds.pop(hold_id, ("", 0))
        if pan:
            self._held[pan] -= amount
        return amount
