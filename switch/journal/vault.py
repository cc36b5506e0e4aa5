"""PAN protection: AES-256-GCM-SIV encryption under rotating keys, keyed hashing, masking.

Each ciphertext is stored beside the id of the key that sealed it, so several keys
can be loaded at once: the current one seals, any loaded one opens. The row the
ciphertext belongs to is bound in as authenticated data, so a ciphertext copied
to another row will not open.

The first byte of a ciphertext names its algorithm. New seals use AES-GCM-SIV
(``\x02``, RFC 8452) under a random 96-bit nonce: it is nonce-misuse resistant, so
even a repeated nonce reveals only that the same PAN was sealed for the same row,
never the key stream; with plain AES-GCM a repeat (likely after about 2**32 seals
under one key, ten days at 5,000 per second) would expose the authentication key.
Ciphertexts sealed by earlier releases with AES-GCM (``\x01``) stay readable, and
`Journal.rewrap_cards` (``kswitch keys rewrap``) reseals them with AES-GCM-SIV.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import stat
from collections.abc import Mapping

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV

from switch.domain.carddata import AccountData, CardData
from switch.journal.config import JournalConfig, SecretSource
from switch.journal.entropy import random_bytes
from switch.journal.errors import KeyConfigError, PanDecryptionFailed, UnknownKeyId
from switch.journal.models import EncryptedCard

log = structlog.get_logger("kswitch.journal")

_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_NONCE_BYTES = 12
GCM = b"\x01"
"""Format byte of AES-GCM ciphertexts (read only: sealed by earlier releases)."""
GCM_SIV = b"\x02"
"""Format byte of AES-GCM-SIV ciphertexts: every new seal."""
_AAD_PREFIX = b"kswitch.journal.pan.v1|"
_ACCOUNT_MARK = "A|"  # plaintext prefix of an account; a PAN is all digits, so never starts with it


class PanVault:
    def __init__(self, keys: Mapping[str, bytes], current_key_id: str, hash_secret: bytes) -> None:
        if not keys:
            raise KeyConfigError("the PAN key ring is empty")
        for key_id, key in keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise KeyConfigError(f"PAN key id {key_id!r} must be 1-32 characters of letters, digits, _ . -")
            if len(key) != 32:
                raise KeyConfigError(f"PAN key {key_id!r} must be 32 bytes (AES-256), got {len(key)}")
        if current_key_id not in keys:
            raise KeyConfigError(f"current PAN key id {current_key_id!r} is not in the key ring {sorted(keys)}")
        if len(hash_secret) < 32:
            raise KeyConfigError(f"the PAN hash secret must be at least 32 bytes, got {len(hash_secret)}")
        self._ciphers = {key_id: {GCM: AESGCM(key), GCM_SIV: AESGCMSIV(key)} for key_id, key in keys.items()}
        self._current = current_key_id
        self._hasher = hmac.new(hash_secret, digestmod=hashlib.sha256)  # keyed once: `pan_hash` copies it

    @classmethod
    def from_config(cls, config: JournalConfig) -> PanVault:
        keys = parse_key_ring(read_secret(config.pan_keys), config.pan_keys)
        current = config.pan_current_key_id or list(keys)[-1]
        secret = _b64(read_secret(config.pan_hash_secret).strip(), f"PAN hash secret ({config.pan_hash_secret.describe()})")
        return cls(keys, current, secret)

    @property
    def current_key_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._ciphers)

    def pan_hash(self, pan: str) -> bytes:
        """HMAC-SHA-256 of the PAN: equal PANs match, and without the secret it cannot be brute-forced.  A copy
        of a keyed hasher: every payment hashes its PAN, and a new HMAC looks its digest up and schedules
        the key each time."""
        hasher = self._hasher.copy()
        hasher.update(pan.encode("ascii"))
        return hasher.digest()

    def seal(self, card: CardData, context: str) -> EncryptedCard:
        """Seal a card, or an `AccountData` (marked in the plaintext so `open` gives the same type back)."""
        text = f"{_ACCOUNT_MARK}{card.pan}" if isinstance(card, AccountData) else f"{card.pan}={card.expiry or ''}"
        plaintext = text.encode("ascii")
        nonce = random_bytes(_NONCE_BYTES)  # not os.urandom: see switch.journal.entropy
        sealed = self._ciphers[self._current][GCM_SIV].encrypt(nonce, plaintext, _aad(self._current, context))
        return EncryptedCard(key_id=self._current, ciphertext=GCM_SIV + nonce + sealed, context=context)

    def open(self, card: EncryptedCard) -> CardData:
        ciphers = self._ciphers.get(card.key_id)
        if ciphers is None:
            raise UnknownKeyId(card.key_id, self._ciphers)
        blob = card.ciphertext
        cipher = ciphers.get(blob[:1])
        if cipher is None:
            raise PanDecryptionFailed(card.key_id, card.context)
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            plaintext = cipher.decrypt(nonce, sealed, _aad(card.key_id, card.context))
        except InvalidTag:
            raise PanDecryptionFailed(card.key_id, card.context) from None
        text = plaintext.decode("ascii")
        if text.startswith(_ACCOUNT_MARK):
            return AccountData(pan=text[len(_ACCOUNT_MARK):])
        pan, _, expiry = text.partition("=")
        return CardData(pan=pan, expiry=expiry or None)


def generate_key() -> str:
    """A fresh AES-256 key, base64, for a ``key_id:base64key`` key-ring entry."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


def parse_key_ring(text: str, source: SecretSource) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for entry in re.split(r"[\s,]+", text.strip()):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep:
            raise KeyConfigError(f"PAN key ring ({source.describe()}): entries must be key_id:base64key")
        if key_id in keys:
            raise KeyConfigError(f"PAN key ring ({source.describe()}): key id {key_id!r} appears twice")
        keys[key_id] = _b64(encoded, f"PAN key {key_id!r} ({source.describe()})")
    if not keys:
        raise KeyConfigError(f"PAN key ring ({source.describe()}) holds no keys")
    return keys


def read_secret(source: SecretSource) -> str:
    if source.file is not None:
        try:
            mode = source.file.stat().st_mode
            text = source.file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyConfigError(f"cannot read {source.describe()}: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("secret_file_permissive", path=str(source.file), mode=oct(mode & 0o777))
        return text
    value = os.environ.get(source.env or "")
    if not value:
        raise KeyConfigError(f"{source.describe()} is not set")
    return value


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(f"{what} is not valid base64") from None


def _aad(key_id: str, context: str) -> bytes:
    return _AAD_PREFIX + key_id.encode("ascii") + b"|" + context.encode("utf-8")
