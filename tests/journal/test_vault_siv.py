"""New PAN seals use AES-GCM-SIV (nonce-misuse resistant); AES-GCM ciphertexts of earlier releases stay
readable, and a rewrap moves them to AES-GCM-SIV."""

from __future__ import annotations

import base64
from typing import Any

import pytest_twisted
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from twisted.internet import reactor

from switch.journal import CardData, EncryptedCard, Kind, NewTransaction, PanVault, open_journal
from tests.journal.conftest import raw_connect

KEY = bytes(range(32))
SECRET = bytes(32)
CARD = CardData("4111111111111111", "2712")
LEGACY_CONTEXT = "LEGACYTXN"
LEGACY = bytes.fromhex(  # sealed by the previous release's vault (AES-GCM) with KEY for LEGACY_CONTEXT
    "018d6509fba45e55934e17ff29fee22a90e9be9d916e36af890f044918f373e2b599fe4b24027c927be70cd8dff7e6a41143"
)


def test_an_aes_gcm_ciphertext_of_an_earlier_release_still_opens():
    vault = PanVault({"k1": KEY}, "k1", SECRET)
    assert vault.open(EncryptedCard("k1", LEGACY, LEGACY_CONTEXT)) == CARD


def test_new_seals_are_aes_gcm_siv_bound_to_their_row():
    vault = PanVault({"k1": KEY}, "k1", SECRET)
    sealed = vault.seal(CARD, "T1")
    assert sealed.ciphertext[:1] == b"\x02"
    nonce, body = sealed.ciphertext[1:13], sealed.ciphertext[13:]
    aad = b"kswitch.journal.pan.v1|k1|T1"
    assert AESGCMSIV(KEY).decrypt(nonce, body, aad) == b"4111111111111111=2712"
    assert vault.open(sealed) == CARD


@pytest_twisted.ensureDeferred
async def test_rewrap_moves_aes_gcm_ciphertexts_to_aes_gcm_siv_under_the_same_key(
    config: Any, registry: Any, key_files: Any
) -> None:
    key_files.write_ring(("k1", base64.b64encode(KEY).decode()))
    journal = await open_journal(config, reactor, registry=registry)
    try:
        txn = await journal.create_transaction(NewTransaction(
            txn_id=LEGACY_CONTEXT, kind=Kind.SALE, merchant_id="m1", connector="bank_a", amount=100,
            currency="USD", card=CARD, retain_card=True,
        ))
        fresh = await journal.create_transaction(NewTransaction(
            kind=Kind.SALE, merchant_id="m1", connector="bank_a", amount=100, currency="USD",
            card=CARD, retain_card=True,
        ))
        conn = raw_connect(config)
        try:  # as an earlier release left it: sealed with AES-GCM
            param = "%s" if config.backend == "postgresql" else "?"
            conn.execute(f"UPDATE transactions SET pan_ciphertext = {param} WHERE txn_id = {param}", (LEGACY, txn.txn_id))
            if config.backend == "sqlite":
                conn.commit()
        finally:
            conn.close()
        legacy = (await journal.get_transaction(txn.txn_id)).card
        assert legacy is not None and legacy.ciphertext == LEGACY and journal.reveal_card(legacy) == CARD
        assert await journal.rewrap_cards() == 1  # the AES-GCM one only; the fresh seal is already SIV
        rewrapped = (await journal.get_transaction(txn.txn_id)).card
        assert rewrapped is not None and rewrapped.key_id == "k1" and rewrapped.ciphertext[:1] == b"\x02"
        assert journal.reveal_card(rewrapped) == CARD
        assert journal.reveal_card((await journal.get_transaction(fresh.txn_id)).card) == CARD
        assert await journal.rewrap_cards() == 0
        assert await journal.key_usage() == {"k1": 2}
    finally:
        await journal.close()
