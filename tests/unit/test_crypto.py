from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sharevault.config import parse_keyring
from sharevault.crypto import (
    DecryptError,
    Identity,
    Keyring,
    Opened,
    TamperedError,
    generate_keyring_value,
)
from tests.support.sharing import legacy_seal

ALICE = Identity("custodian", "cl-alice", "GDRIVE", "pair-1")
KEY1 = ("k1", b"\x01" * 32)
KEY2 = ("k2", b"\x02" * 32)


V, M = 1_733_000_000_000_000, "m-1"


def test_seal_then_open_round_trips() -> None:
    ring = Keyring([KEY1])
    sealed = ring.seal(b"secret share", ALICE, V, M)
    assert b"secret share" not in sealed
    assert ring.open(sealed, ALICE, V, M) == b"secret share"


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
        ring.open(ring.seal(b"share", ALICE, V, M), other, V, M)


@pytest.mark.parametrize("version, message_id", [(V + 1, M), (V - 1, M), (2**62, M), (V, "m-2")])
def test_ciphertext_is_bound_to_its_version_and_message_id(version: int, message_id: str) -> None:
    ring = Keyring([KEY1])
    sealed = ring.seal(b"share", ALICE, V, M)
    with pytest.raises(TamperedError, match="another version or message id"):
        ring.open(sealed, ALICE, version, message_id)


@pytest.mark.parametrize("index", [6, 13, 15, 17])
def test_a_rewritten_version_or_message_id_in_the_seal_fails_to_authenticate(index: int) -> None:
    # After `\x05v2:k1`: bytes 6-13 hold the version, 14 the message id's length, 15-17 the id.
    ring = Keyring([KEY1])
    sealed = bytearray(ring.seal(b"share", ALICE, V, M))
    assert sealed[:6] == b"\x05v2:k1"
    sealed[index] ^= 1
    with pytest.raises(DecryptError, match="authentication failed"):
        ring.open(bytes(sealed), ALICE, V, M)


def test_tampering_is_detected() -> None:
    ring = Keyring([KEY1])
    sealed = bytearray(ring.seal(b"share", ALICE, V, M))
    sealed[-1] ^= 1
    with pytest.raises(DecryptError):
        ring.open(bytes(sealed), ALICE, V, M)


def test_old_keys_still_open_after_rotation() -> None:
    old = Keyring([KEY1]).seal(b"share", ALICE, V, M)
    rotated = Keyring([KEY2, KEY1])
    assert rotated.open(old, ALICE, V, M) == b"share"
    assert Keyring.key_id_of(rotated.seal(b"share", ALICE, V, M)) == "v2:k2"
    assert rotated.current_tag == "v2:k2"
    with pytest.raises(DecryptError, match="unknown key id"):
        Keyring([KEY2]).open(old, ALICE, V, M)


def test_legacy_seals_open_only_while_accepted() -> None:
    legacy = legacy_seal("k1", KEY1[1], b"share", ALICE)
    assert Keyring.is_legacy(legacy) and Keyring.key_id_of(legacy) == "k1"
    # Bound to no version nor message id: whatever the row or message claims, it opens.
    assert Keyring([KEY1]).open(legacy, ALICE, V, M) == b"share"
    assert Keyring([KEY1]).unseal(legacy, ALICE) == Opened(b"share", None, None)
    strict = Keyring([KEY1], accept_legacy=False)
    with pytest.raises(TamperedError, match="legacy"):
        strict.open(legacy, ALICE, V, M)
    assert strict.open(legacy, ALICE, V, M, legacy=True) == b"share"
    assert not Keyring.is_legacy(strict.seal(b"share", ALICE, V, M))


def test_a_bearer_is_checked_against_its_message_id_alone() -> None:
    ring = Keyring([KEY1])
    sealed = ring.seal(b"token", ALICE, V, M)
    assert ring.open(sealed, ALICE, None, M) == b"token"
    with pytest.raises(TamperedError):
        ring.open(sealed, ALICE, None, "m-2")


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


def test_sealed_layout_is_tag_version_message_id_nonce_ciphertext() -> None:
    sealed = Keyring([("key-7", b"\x07" * 32)]).seal(b"share", ALICE, V, M)
    assert sealed[:9] == b"\x08v2:key-7"
    assert int.from_bytes(sealed[9:17], "big") == V
    assert sealed[17:21] == b"\x03m-1"
    nonce, ct = sealed[21:33], sealed[33:]
    bound = json.dumps([*dataclasses.astuple(ALICE), V, M]).encode()
    assert ALICE.bound_data(V, M) == bound
    assert AESGCM(b"\x07" * 32).decrypt(nonce, ct, bound) == b"share"
