"""PAN encryption, hashing and key handling."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.domain.cardcheck import luhn_check_digit
from switch.journal import (
    CardData,
    EncryptedCard,
    JournalConfig,
    KeyConfigError,
    PanDecryptionFailed,
    PanVault,
    SecretSource,
    UnknownKeyId,
    generate_key,
)
from switch.journal.vault import parse_key_ring

SECRET = os.urandom(32)
K1, K2 = os.urandom(32), os.urandom(32)


@st.composite
def cards(draw: st.DrawFn) -> CardData:
    body = draw(st.text(alphabet="0123456789", min_size=11, max_size=18))
    expiry = draw(st.none() | st.builds(lambda y, m: f"{y:02d}{m:02d}", st.integers(0, 99), st.integers(1, 12)))
    return CardData(body + luhn_check_digit(body), expiry)


@given(card=cards(), context=st.text(min_size=1, max_size=40))
def test_round_trip(card: CardData, context: str) -> None:
    vault = PanVault({"k1": K1}, "k1", SECRET)
    sealed = vault.seal(card, context)
    assert card.pan.encode() not in sealed.ciphertext
    assert vault.open(sealed) == card


@given(card=cards())
def test_equal_pans_hash_equal_and_ciphertexts_differ(card: CardData) -> None:
    vault = PanVault({"k1": K1}, "k1", SECRET)
    assert vault.pan_hash(card.pan) == vault.pan_hash(card.pan)
    assert len(vault.pan_hash(card.pan)) == 32
    assert vault.seal(card, "t").ciphertext != vault.seal(card, "t").ciphertext
    assert PanVault({"k1": K1}, "k1", os.urandom(32)).pan_hash(card.pan) != vault.pan_hash(card.pan)


@given(pans=st.lists(st.text(alphabet="0123456789", min_size=12, max_size=19), max_size=4))
def test_a_pan_hash_is_hmac_sha256_of_the_pan_under_the_secret_whatever_came_before(pans: list[str]) -> None:
    """The stored hashes (blocklists, lookups by card) are HMAC-SHA-256: a keyed hasher reused across
    calls must give each PAN exactly that, never something carried over from the PAN before."""
    vault = PanVault({"k1": K1}, "k1", SECRET)
    for pan in pans:
        assert vault.pan_hash(pan) == hmac.new(SECRET, pan.encode(), hashlib.sha256).digest()


def test_rotation_keeps_old_ciphertexts_readable() -> None:
    card = CardData("4111111111111111", "2712")
    before = PanVault({"k1": K1}, "k1", SECRET).seal(card, "t1")
    rotated = PanVault({"k1": K1, "k2": K2}, "k2", SECRET)
    assert rotated.open(before) == card
    after = rotated.seal(card, "t2")
    assert (before.key_id, after.key_id) == ("k1", "k2")
    retired = PanVault({"k2": K2}, "k2", SECRET)
    assert retired.open(after) == card
    with pytest.raises(UnknownKeyId, match="key id 'k1', which is not loaded"):
        retired.open(before)


def test_wrong_key_material_or_moved_ciphertext_fails_clearly() -> None:
    card = CardData("5555555555554444", "2801")
    sealed = PanVault({"k1": K1}, "k1", SECRET).seal(card, "t1")
    with pytest.raises(PanDecryptionFailed, match="wrong, or the ciphertext was altered or moved"):
        PanVault({"k1": K2}, "k1", SECRET).open(sealed)
    with pytest.raises(PanDecryptionFailed):
        PanVault({"k1": K1}, "k1", SECRET).open(EncryptedCard("k1", sealed.ciphertext, "t2"))
    tampered = bytearray(sealed.ciphertext)
    tampered[-1] ^= 1
    with pytest.raises(PanDecryptionFailed):
        PanVault({"k1": K1}, "k1", SECRET).open(EncryptedCard("k1", bytes(tampered), "t1"))


def test_card_data_never_shows_the_pan() -> None:
    card = CardData("4111111111111111", "2712")
    assert "4111111111111111" not in repr(card) and "2712" not in repr(card)
    assert card.masked == "411111******1111"


@pytest.mark.parametrize(
    ("keys", "current", "secret", "message"),
    [
        ({}, "k1", SECRET, "empty"),
        ({"k1": K1[:16]}, "k1", SECRET, "32 bytes"),
        ({"k 1": K1}, "k 1", SECRET, "key id"),
        ({"k1": K1}, "k2", SECRET, "not in the key ring"),
        ({"k1": K1}, "k1", SECRET[:16], "hash secret"),
    ],
)
def test_bad_keys_are_refused(keys: dict[str, bytes], current: str, secret: bytes, message: str) -> None:
    with pytest.raises(KeyConfigError, match=message):
        PanVault(keys, current, secret)


def test_keys_from_a_file_and_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ring = tmp_path / "ring"
    ring.write_text(f"k1:{generate_key()}\nk2:{generate_key()}\n")
    ring.chmod(0o600)
    monkeypatch.setenv("TEST_PAN_HASH", base64.b64encode(SECRET).decode())
    config = JournalConfig(pan_keys=SecretSource(file=ring), pan_hash_secret=SecretSource(env="TEST_PAN_HASH"))
    vault = PanVault.from_config(config)
    assert (vault.current_key_id, vault.key_ids) == ("k2", frozenset({"k1", "k2"}))
    pinned = PanVault.from_config(
        JournalConfig(pan_keys=config.pan_keys, pan_hash_secret=config.pan_hash_secret, pan_current_key_id="k1")
    )
    assert pinned.current_key_id == "k1"

    monkeypatch.setenv("TEST_PAN_KEYS", f"a:{generate_key()}, b:{generate_key()}")
    from_env = PanVault.from_config(JournalConfig(pan_keys=SecretSource(env="TEST_PAN_KEYS"), pan_hash_secret=config.pan_hash_secret))
    assert from_env.key_ids == frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("text", "message"),
    [("k1", "key_id:base64key"), ("k1:not base64!", "not valid base64"), ("", "holds no keys"), (f"a:{'A' * 44},a:{'A' * 44}", "twice")],
)
def test_malformed_key_rings(text: str, message: str) -> None:
    with pytest.raises(KeyConfigError, match=message):
        parse_key_ring(text, SecretSource(env="X"))


def test_missing_secrets_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KSWITCH_PAN_KEYS", raising=False)
    with pytest.raises(KeyConfigError, match="environment variable KSWITCH_PAN_KEYS is not set"):
        PanVault.from_config(JournalConfig())
    with pytest.raises(KeyConfigError, match="cannot read file"):
        PanVault.from_config(JournalConfig(pan_keys=SecretSource(file=tmp_path / "absent")))
    with pytest.raises(KeyConfigError, match="exactly one"):
        SecretSource(file=tmp_path, env="BOTH")
