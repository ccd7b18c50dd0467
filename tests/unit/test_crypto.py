from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sharevault.config import parse_keyring
from sharevault.crypto import DecryptError, Identity, Keyring, generate_keyring_value

ALICE = Identity("custodian", "cl-alice", "GDRIVE", "pair-1")
KEY1 = ("k1", b"\x01" * 32)
KEY2 = ("k2", b"\x02" * 32)


def test_seal_then_open_round_trips() -> None:
    ring = Keyring([KEY1])
    sealed = ring.seal(b"secret share", ALICE)
    assert b"secret share" not in sealed
    assert ring.open(sealed, ALICE) == b"secret share"


@pytest.mark.parametrize(
    "other",
    [
        Identity("custodian", "cl-bob", "GDRIVE", "pair-1"),
        Identity("custodian", "cl-alice", "ICLOUD", "pair-1"),
        Identity("custodian", "cl-alice", "GDRIVE", "pair-2"),
        Identity("client", "cl-alice", "GDRIVE", "pair-1"),
    ],
)
def test_ciphertext_is_bound_to_its_identity(other: Identity) -> None:
    ring = Keyring([KEY1])
    with pytest.raises(DecryptError):
        ring.open(ring.seal(b"share", ALICE), other)


def test_tampering_is_detected() -> None:
    ring = Keyring([KEY1])
    sealed = bytearray(ring.seal(b"share", ALICE))
    sealed[-1] ^= 1
    with pytest.raises(DecryptError):
        ring.open(bytes(sealed), ALICE)


def test_old_keys_still_open_after_rotation() -> None:
    old = Keyring([KEY1]).seal(b"share", ALICE)
    rotated = Keyring([KEY2, KEY1])
    assert rotated.open(old, ALICE) == b"share"
    assert Keyring.key_id_of(rotated.seal(b"share", ALICE)) == "k2"
    with pytest.raises(DecryptError, match="unknown key id"):
        Keyring([KEY2]).open(old, ALICE)


def test_generated_keyring_value_parses() -> None:
    value = generate_keyring_value("dev1")
    [(kid, key)] = parse_keyring(value)
    assert kid == "dev1"
    assert len(key) == 32
    assert generate_keyring_value() != generate_keyring_value()


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("", "at least one key"),
        ("nokey", "<key id>:<base64"),
        ("k1:not-base64!!", "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "32 bytes"),
        (
            f"k1:{base64.b64encode(bytes(32)).decode()},k1:{base64.b64encode(bytes(32)).decode()}",
            "twice",
        ),
    ],
)
def test_malformed_keyrings_are_refused(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_keyring(raw)


@pytest.mark.parametrize(
    "fields",
    [
        ("custodian", "cl-alice", "GDRIVE", "pair-1"),
        ("client", "app", "UNKNOWN", ""),
        ("bearer", 'quote"back\\slash/', "tab\tnew\nline\x00\x1f\x7f", "ü€😀\ud800"),
        ("", "", "", ""),
    ],
)
def test_associated_data_is_the_json_array_stored_rows_were_sealed_with(
    fields: tuple[str, str, str, str],
) -> None:
    # The bytes every stored share is bound to: a change here and no existing row opens.
    assert Identity(*fields).associated_data() == json.dumps(list(fields)).encode()


def test_sealed_layout_is_key_id_length_key_id_nonce_ciphertext() -> None:
    sealed = Keyring([("key-7", b"\x07" * 32)]).seal(b"share", ALICE)
    assert sealed[:6] == b"\x05key-7"
    nonce, ct = sealed[6:18], sealed[18:]
    assert AESGCM(b"\x07" * 32).decrypt(nonce, ct, ALICE.associated_data()) == b"share"
