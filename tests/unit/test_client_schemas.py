"""Client share bodies, the lookup order, the report choice, the queue message's report fields."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from sharevault.crypto import Identity, Keyring
from sharevault.db import StoredShare
from sharevault.messages import ShareMessage, bearer_identity
from sharevault.portal import parse_retry_after
from sharevault.schemas import ClientBackup, ClientBackupQuery
from sharevault.service.client_shares import lookup_order, report_api_for
from sharevault.worker.outbox import backoff
from tests.support.environment import SAMPLES

KEYRING = Keyring([("k1", b"K" * 32)])


def test_the_three_body_shapes_carry_the_same_share() -> None:
    doc = ClientBackup.model_validate({"backupShare": "s1"})
    axios = ClientBackup.model_validate({"data": {"backupShare": "s1"}})
    portalex = ClientBackup.model_validate(
        {"backupMethod": "GDRIVE", "backupSharePairId": "p1", "cipherText": "s1"}
    )
    assert doc.share_text == axios.share_text == portalex.share_text == "s1"
    assert (doc.backup_method, doc.backup_share_pair_id) == ("UNKNOWN", "")
    assert (axios.backup_method, axios.backup_share_pair_id) == ("UNKNOWN", "")
    assert (portalex.backup_method, portalex.backup_share_pair_id) == ("GDRIVE", "p1")


def test_the_shipped_samples_parse() -> None:
    seed = ClientBackup.model_validate_json((SAMPLES / "client-backup-seed.json").read_bytes())
    raw = json.loads((SAMPLES / "client-backup-portalex.json").read_text())
    portalex = ClientBackup.model_validate(raw)
    assert seed.backup_method == "UNKNOWN" and len(seed.share_text) > 1000
    assert portalex.share_text == raw["cipherText"]
    assert portalex.backup_share_pair_id == raw["backupSharePairId"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"backupMethod": "GDRIVE"},
        {"backupShare": "a", "cipherText": "b"},
        {"data": {"backupShare": "a"}, "backupShare": "a"},
        {"data": {}},
        {"backupShare": ""},
        {"cipherText": 42},
        {"cipherText": "x", "backupMethod": "has space"},
    ],
)
def test_ambiguous_or_missing_shares_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ClientBackup.model_validate(body)


def test_blank_or_null_method_and_pair_mean_not_given() -> None:
    body = ClientBackup.model_validate(
        {"cipherText": "x", "backupMethod": "", "backupSharePairId": None}
    )
    assert (body.backup_method, body.backup_share_pair_id) == ("UNKNOWN", "")
    query = ClientBackupQuery.model_validate({"backupMethod": "", "backupSharePairId": ""})
    assert (query.backup_method, query.backup_share_pair_id) == (None, None)


def share(method: str, pair: str, msg: str) -> StoredShare:
    return StoredShare(method, pair, b"", 0, msg)


def test_lookup_order_follows_portalex() -> None:
    # Newest first, as the store returns them.
    shares = [
        share("GDRIVE", "p2", "g2"),
        share("ICLOUD", "p3", "i3"),
        share("GDRIVE", "p1", "g1"),
        share("UNKNOWN", "", "legacy"),
    ]

    def ids(found: list[StoredShare]) -> list[str]:
        return [s.message_id for s in found]

    assert ids(lookup_order(shares, None, "p1")) == ["g1", "legacy"]
    assert ids(lookup_order(shares, "ICLOUD", "p1")) == ["g1", "legacy"]  # pair id wins
    assert ids(lookup_order(shares, "GDRIVE", None)) == ["g2", "g1", "legacy"]
    assert ids(lookup_order(shares, "PASSKEY", None)) == ["legacy"]
    assert ids(lookup_order(shares, None, "nope")) == ["legacy"]
    assert ids(lookup_order(shares, None, None)) == ["legacy"]
    assert lookup_order(shares[:3], "PASSKEY", None) == []


def test_report_api_v3_only_with_a_pair_id() -> None:
    assert report_api_for("v3", "p1") == "v3"
    assert report_api_for("v3", "") == "v2"
    assert report_api_for("v2", "p1") == "v2"
    assert report_api_for("off", "p1") is None


def test_message_carries_a_sealed_bearer_only_for_client_reports() -> None:
    identity = Identity("client", "cl", "GDRIVE", "p1")
    sealed_bearer = KEYRING.seal(b"token", bearer_identity(identity), 1, "m1")
    msg = ShareMessage.build(
        message_id="m1",
        version=1,
        identity=identity,
        sealed=KEYRING.seal(b"share", identity, 1, "m1"),
        report_api="v3",
        bearer_sealed=sealed_bearer,
    )
    again = ShareMessage.model_validate_json(msg.model_dump_json())
    assert again.bearer_sealed == sealed_bearer
    assert KEYRING.open(sealed_bearer, bearer_identity(identity), None, "m1") == b"token"
    assert "token" not in repr(again)
    # Bound to its own kind: a bearer never opens as a share, nor a share as a bearer.
    with pytest.raises(Exception, match="authentication failed"):
        KEYRING.open(sealed_bearer, identity, 1, "m1")
    fields = msg.model_dump()
    with pytest.raises(ValidationError, match="go together"):
        ShareMessage.model_validate({**fields, "bearer_sealed": None})
    with pytest.raises(ValidationError, match="only client shares"):
        ShareMessage.model_validate({**fields, "kind": "custodian"})
    custodian = ShareMessage.model_validate({**fields, "report_api": None, "bearer_sealed": None})
    assert custodian.bearer_sealed is None


def test_retry_after_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(date, now=1445412480.0 - 30) == pytest.approx(30.0)


def test_backoff_grows_is_jittered_and_capped() -> None:
    first = [backoff(0, 1.0, 60.0) for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in first)
    assert len(set(first)) > 100
    assert all(4.0 <= backoff(3, 1.0, 60.0) <= 8.0 for _ in range(50))
    assert all(30.0 <= backoff(500, 1.0, 60.0) <= 60.0 for _ in range(50))
