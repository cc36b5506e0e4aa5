"""An event about a payment for its merchant (a late outcome, a reversal): what subscribers get.

The journal appends events in the same commit as the state change they tell of and
numbers them; the engine's notifier pushes them to subscribed web-tier clients, and the
socket API writes them as push lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Event:
    event_id: int
    merchant_id: str
    txn_id: str | None
    type: str
    payload: Mapping[str, Any]
    created_at: datetime
