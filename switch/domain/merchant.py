"""Merchants and their stores, as the acquirer knows them.

The configuration builds them; the socket API checks a client may act for a merchant and
store; the engine puts the merchant's acceptor data into each bank message (fields 18,
41, 42, 43 through `switch.iso.translate.Acceptor`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """A store (web shop, channel) of a merchant; ``terminal_id`` goes to ISO 8583 field 41."""

    id: str
    terminal_id: str


@dataclass(frozen=True, slots=True)
class MerchantConfig:
    """A merchant as the acquirer knows it: fields 18 (``mcc``), 42 (``acquirer_merchant_id``) and 43."""

    id: str
    name: str
    mcc: str
    city: str
    country: str
    acquirer_merchant_id: str
    stores: Mapping[str, StoreConfig]

    @classmethod
    def with_stores(cls, stores: Iterable[StoreConfig], **fields: str) -> MerchantConfig:
        """Build a merchant from a list of stores, refusing duplicate store ids."""
        by_id: dict[str, StoreConfig] = {}
        for store in stores:
            if store.id in by_id:
                raise ValueError(f"merchant {fields.get('id')!r} lists store {store.id!r} twice")
            by_id[store.id] = store
        return cls(stores=by_id, **fields)
