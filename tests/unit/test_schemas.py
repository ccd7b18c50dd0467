from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from sharevault.crypto import Identity
from sharevault.messages import ShareMessage
from sharevault.schemas import WebhookBackup
from sharevault.schemas.common import MAX_SHARE_CHARS


def parse(body: object) -> WebhookBackup:
    return WebhookBackup.model_validate_json(json.dumps(body))


def test_full_shape() -> None:
    body = parse(
        {"clientId": "c1", "backupMethod": "GDRIVE", "backupSharePairId": "p1", "share": "{}x"}
    )
    assert (body.client_id, body.backup_method, body.backup_share_pair_id) == ("c1", "GDRIVE", "p1")
    assert body.share_text == "{}x"


@pytest.mark.parametrize("method", [None, "absent", ""])
@pytest.mark.parametrize("pair", [None, "absent"])
def test_legacy_shapes_default(method: str | None, pair: str | None) -> None:
    raw: dict[str, object] = {"clientId": "c1", "share": "s"}
    if method != "absent":
        raw["backupMethod"] = method
    if pair != "absent":
        raw["backupSharePairId"] = pair
    body = parse(raw)
    assert body.backup_method == "UNKNOWN"
    assert body.backup_share_pair_id == ""


def test_share_object_is_kept_as_compact_json_text() -> None:
    share = {"b": 1, "a": {"x": "ü"}}
    body = parse({"clientId": "c1", "share": share})
    assert body.share_text == '{"b":1,"a":{"x":"ü"}}'
    assert json.loads(body.share_text) == share


def test_unknown_methods_are_accepted_as_is() -> None:
    assert parse(
        {"clientId": "c", "backupMethod": "NEWTHING-ED448", "share": "s"}
    ).backup_method == ("NEWTHING-ED448")


@pytest.mark.parametrize(
    "method", ["GDRIVE-SECP256K1", "PASSKEY_ED25519", "v2.CUSTOM:x+y", "M" * 64]
)
def test_methods_of_the_safe_charset_are_accepted(method: str) -> None:
    assert parse({"clientId": "c", "backupMethod": method, "share": "s"}).backup_method == method


@pytest.mark.parametrize(
    "raw",
    [
        {"share": "s"},
        {"clientId": "", "share": "s"},
        {"clientId": "c" * 256, "share": "s"},
        {"clientId": "has space", "share": "s"},
        {"clientId": "c", "share": ""},
        {"clientId": "c", "share": 42},
        {"clientId": "c", "share": ["a"]},
        {"clientId": "c", "share": {}},
        {"clientId": "c", "share": "x" * (MAX_SHARE_CHARS + 1)},
        {"clientId": "c", "backupMethod": "M" * 65, "share": "s"},
        {"clientId": "c", "backupMethod": "-LEADING", "share": "s"},
        {"clientId": "c", "backupMethod": "GDRIVE<script>", "share": "s"},
        {"clientId": "c", "backupMethod": "GDRIVE\n", "share": "s"},
        {"clientId": "c", "backupMethod": "a'b", "share": "s"},
        {"clientId": "c", "backupMethod": "GDRIVE/..", "share": "s"},
        {"clientId": 7, "share": "s"},
    ],
)
def test_invalid_bodies_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse(raw)


def test_queue_message_round_trips() -> None:
    identity = Identity("custodian", "c1", "GDRIVE", "")
    msg = ShareMessage.build(message_id="m1", version=5, identity=identity, sealed=b"\x00\x01")
    again = ShareMessage.model_validate_json(msg.model_dump_json())
    assert again.identity == identity
    assert again.sealed == b"\x00\x01"
    assert b"context" not in msg.encode()  # absent optional fields stay out of the body
    with pytest.raises(ValidationError, match="base64"):
        ShareMessage.model_validate_json(msg.model_dump_json().replace("AAE=", "!!"))
