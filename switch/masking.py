"""Masking of card data before anything is logged, traced or shown.

PCI DSS 3.4.1 allows at most the BIN (first six) and the last four digits of a PAN
to be displayed; everything else a dialect marks sensitive is replaced entirely, so a
log line or a trace can be shared with a bank without leaking card data.
"""

from __future__ import annotations

from typing import Mapping

from switch.cardcheck import mask_pan
from switch.dialect import ALWAYS_SENSITIVE, Dialect

__all__ = ["mask_pan", "mask_last4", "mask_full", "mask_message"]


def mask_last4(value: str) -> str:
    return "*" * (len(value) - 4) + value[-4:] if len(value) > 4 else "*" * len(value)


def mask_full(value: str) -> str:
    return f"[{len(value)} masked]"


_STYLES = {"pan": mask_pan, "last4": mask_last4, "full": mask_full}


def mask_message(message: Mapping[str, str], dialect: Dialect | None = None) -> dict[str, str]:
    """A copy of an ISO message that is safe to log: sensitive fields masked."""
    out = dict(message)
    fields = dialect.fields if dialect is not None else {}
    for number, value in message.items():
        f = fields.get(number)
        if f is not None and f.sensitive:
            out[number] = _STYLES[f.mask](value)
        elif number in ALWAYS_SENSITIVE:
            out[number] = mask_pan(value) if number == "2" else mask_full(value)
    return out
