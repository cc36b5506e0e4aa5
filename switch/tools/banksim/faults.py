"""Fault injection: the ways a real bank host misbehaves, on demand.

A switch's timeouts, reversals, store-and-forward and reconnection logic are only
proven against a peer that is slow, silent, rude or broken at the right moment.
Each fault is off by default; `Faults` is immutable and replaced as a whole
(`BankSim.set_faults`), so a change takes effect between two messages, never in
the middle of one.
"""

from __future__ import annotations

from dataclasses import dataclass

from switch.tools.banksim.codes import wire_code


@dataclass(frozen=True)
class Faults:
    """
    - ``delay``: seconds to wait before each answer (network management included).
    - ``drop_ratio``: fraction (0 to 1) of non-network requests that are processed
      (the ledger moves) but never answered: the answer is "lost on the way back".
    - ``seed``: seeds the random choice of which requests are dropped.
    - ``disconnect_after``: close a connection when it receives its Nth message;
      that message is neither processed nor answered.
    - ``garbage_every``: every Nth answer is replaced by a frame that does not decode.
    - ``decline_all``: answer every authorization and financial request with this code,
      without touching the ledger.
    - ``answer_fields``: (field, value) pairs written over the answer to every
      authorization and financial request after the ledger moved: a host echoing
      another amount (``("4", "000000009999")``), a blank or NUL response code, card
      data in an unexpected field.
    - ``drop_posting`` / ``double_posting``: while on, each new sale, completion or refund
      posting is left out of / counted twice in the bank's day totals (its reconciliation
      answer and settlement file), though the books move as usual: the bank disagrees with
      the switch about that payment.  Turn it on for one payment to test an out-of-balance day.
    """

    delay: float = 0.0
    drop_ratio: float = 0.0
    seed: int | None = None
    disconnect_after: int | None = None
    garbage_every: int | None = None
    decline_all: str | None = None
    answer_fields: tuple[tuple[str, str], ...] = ()
    drop_posting: bool = False
    double_posting: bool = False

    def check(self, version: int) -> None:
        """Raise ValueError naming the first setting that cannot work with this dialect version."""
        if not 0 <= self.delay <= 3600:
            raise ValueError(f"delay: got {self.delay}; expected 0 to 3600 seconds")
        if not 0 <= self.drop_ratio <= 1:
            raise ValueError(f"drop_ratio: got {self.drop_ratio}; expected a fraction from 0 to 1")
        for name in ("disconnect_after", "garbage_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: got {value}; expected a count of 1 or more")
        if self.drop_posting and self.double_posting:
            raise ValueError("drop_posting and double_posting: expected at most one of them on")
        if self.decline_all is not None:
            wire_code(self.decline_all, version)
        for number, value in self.answer_fields:
            if not (isinstance(number, str) and number.isdigit() and 2 <= int(number) <= 128 and isinstance(value, str)):
                raise ValueError(f"answer_fields: got field {number!r}; expected (field number 2 to 128, text) pairs")
