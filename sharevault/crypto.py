"""Keyring and AES-256-GCM sealing of shares, bound to their identity and to the message that
carried them (version and message id) by associated data."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as json_string

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
# The tag of a seal that binds its message: `v2:<key id>` (a key id never holds ':').
FORMAT_V2 = b"v2:"
VERSION_BYTES = 8


class DecryptError(Exception):
    """A sealed share could not be opened: wrong key, tampered, or bound to another identity."""


class TamperedError(DecryptError):
    """It opens, but was sealed for another version or message id than it claims now; or it is
    a legacy seal (binding neither) where those are no longer accepted."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What a stored share is: kind (custodian/client), client, method, pair ('' when none)."""

    kind: str
    client_id: str
    backup_method: str
    pair_id: str

    def _fields(self) -> str:
        return (
            f"{json_string(self.kind)}, {json_string(self.client_id)}, "
            f"{json_string(self.backup_method)}, {json_string(self.pair_id)}"
        )

    def associated_data(self) -> bytes:
        """`json.dumps([kind, client_id, backup_method, pair_id])`, byte for byte (legacy seals
        are bound to these bytes): a JSON array is unambiguous whatever characters the ids hold."""
        # Each string through json.dumps's own escaping, joined by its default separator: the
        # same bytes at a seventh of json.dumps's cost, paid for every share sealed or opened.
        return f"[{self._fields()}]".encode()

    def bound_data(self, version: int, message_id: str) -> bytes:
        """`json.dumps([kind, client_id, backup_method, pair_id, version, message_id])`: what a
        v2 seal is bound to (six elements, never the four of a legacy seal)."""
        return f"[{self._fields()}, {int(version)}, {json_string(message_id)}]".encode()


@dataclass(frozen=True, slots=True)
class Opened:
    """What a seal held, and the message it was sealed for (None: a legacy seal binds none)."""

    plaintext: bytes
    version: int | None
    message_id: str | None

    def sealed_for(self, version: int | None, message_id: str) -> bool:
        """Whether it was sealed for this message (and this version, unless None); a legacy
        seal binds neither, so it passes."""
        return self.message_id is None or (
            self.message_id == message_id and (version is None or self.version == version)
        )


class Keyring:
    """Key-encryption keys by id: the first seals, every one opens. Legacy seals (no version or
    message id bound) open only while `accept_legacy`."""

    def __init__(self, keys: Sequence[tuple[str, bytes]], *, accept_legacy: bool = True) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._ciphers = {kid.encode(): AESGCM(key) for kid, key in keys}
        self.current_id = keys[0][0]
        self.accept_legacy = accept_legacy
        self._current = self._ciphers[self.current_id.encode()]
        tag = FORMAT_V2 + self.current_id.encode()
        # The key id column of what this keyring seals now (`v2:<current key id>`).
        self.current_tag = tag.decode()
        self._sealed_prefix = bytes([len(tag)]) + tag

    @property
    def key_ids(self) -> list[str]:
        return [kid.decode() for kid in self._ciphers]

    def seal(self, plaintext: bytes, identity: Identity, version: int, message_id: str) -> bytes:
        """Encrypt: `len(tag) ‖ tag ‖ version (8 bytes) ‖ len(id) ‖ id ‖ nonce ‖ ciphertext+tag`,
        tag = `v2:<kid>`; version and message id in clear, authenticated with the identity."""
        mid = message_id.encode()
        nonce = os.urandom(NONCE_BYTES)
        ct = self._current.encrypt(nonce, plaintext, identity.bound_data(version, message_id))
        bound = version.to_bytes(VERSION_BYTES, "big") + bytes([len(mid)]) + mid
        return self._sealed_prefix + bound + nonce + ct

    def unseal(self, sealed: bytes, identity: Identity, *, legacy: bool | None = None) -> Opened:
        """Decrypt and authenticate either format; DecryptError when anything does not match,
        TamperedError for a legacy seal unless `legacy` (default: `accept_legacy`) allows it."""
        if len(sealed) < 1:
            raise DecryptError("empty ciphertext")
        end = 1 + sealed[0]
        tag = sealed[1:end]
        v2 = tag.startswith(FORMAT_V2)
        cipher = self._ciphers.get(tag[len(FORMAT_V2) :] if v2 else tag)
        if cipher is None:
            raise DecryptError("unknown key id")
        version: int | None = None
        message_id: str | None = None
        if v2:
            version = int.from_bytes(sealed[end : end + VERSION_BYTES], "big")
            at = end + VERSION_BYTES + 1
            end = at + sealed[at - 1] if len(sealed) >= at else at
            try:
                message_id = sealed[at:end].decode()
            except UnicodeDecodeError:
                raise DecryptError("authentication failed") from None
            data = identity.bound_data(version, message_id)
        elif legacy if legacy is not None else self.accept_legacy:
            data = identity.associated_data()
        else:
            raise TamperedError("legacy seal refused (ACCEPT_LEGACY_SEALS is off)")
        nonce = sealed[end : end + NONCE_BYTES]
        try:
            plaintext = cipher.decrypt(nonce, sealed[end + NONCE_BYTES :], data)
        except (InvalidTag, ValueError):
            raise DecryptError("authentication failed") from None
        return Opened(plaintext, version, message_id)

    def open(
        self,
        sealed: bytes,
        identity: Identity,
        version: int | None,
        message_id: str,
        *,
        legacy: bool | None = None,
    ) -> bytes:
        """Decrypt, authenticate and check the seal was made for this message (and this version,
        unless None); TamperedError when it was made for another."""
        opened = self.unseal(sealed, identity, legacy=legacy)
        if not opened.sealed_for(version, message_id):
            raise TamperedError("sealed for another version or message id")
        return opened.plaintext

    @staticmethod
    def key_id_of(sealed: bytes) -> str:
        """The tag of the key that sealed this ciphertext: `v2:<kid>`, or `<kid>` when legacy."""
        return sealed[1 : 1 + sealed[0]].decode(errors="replace") if sealed else ""

    @staticmethod
    def is_legacy(sealed: bytes) -> bool:
        return not sealed[1 : 1 + sealed[0]].startswith(FORMAT_V2) if sealed else False


def key_name(tag: str) -> str:
    """The key id in a stored tag (`v2:k1` and legacy `k1` alike name key `k1`)."""
    return tag.removeprefix(FORMAT_V2.decode())


def generate_keyring_value(key_id: str | None = None) -> str:
    """A fresh `SHAREVAULT_ENCRYPTION_KEYS` value holding one random 256-bit key."""
    kid = key_id or "k" + secrets.token_hex(4)
    return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"
