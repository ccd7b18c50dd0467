"""Examples for the OpenAPI description: one per body and per answer, valid against its schema."""

from __future__ import annotations

from typing import Any

CLIENT_ID = "clxyz0example0client0id"
PAIR_ID = "clpair0example0pair0id"
# The share is opaque JSON text from Portal; shortened here (a real one is 5-10 KB).
SHARE = '{"signingSharePairId":"clsig0example","share":"5f1c…","pubkey":{"X":"…","Y":"…"}}'
MESSAGE_ID = "7c9e6679f4e44b7a8c1e3d2a5b6f0e91"

WEBHOOK_BACKUP = {
    "clientId": CLIENT_ID,
    "backupMethod": "GDRIVE",
    "backupSharePairId": PAIR_ID,
    "share": SHARE,
}
WEBHOOK_FETCH = {"clientId": CLIENT_ID}
FETCH_ANSWER = {"backupShares": [SHARE], "backupShare": SHARE}
ACCEPTED = {"messageId": MESSAGE_ID, "status": "committed"}
CIPHER_TEXT = "ZqeVCdUzsaf1aaqeLEvgaeWDtVkAMWp7s291cBmnDy191UXRhHHt5ZqKK0hxWuUJxDH2xKWE"

# The three shapes the wallet apps send (contract §2), by name.
CLIENT_BACKUPS: dict[str, dict[str, Any]] = {
    "portalDoc": {
        "summary": "Portal's doc and seed app: the share alone (no method, no pair id)",
        "value": {"backupShare": CIPHER_TEXT},
    },
    "portalAxios": {
        "summary": "Portal's axios example: the share wrapped in data",
        "value": {"data": {"backupShare": CIPHER_TEXT}},
    },
    "portalEx": {
        "summary": "PortalEx: method, pair id and cipherText",
        "value": {
            "backupMethod": "PASSKEY",
            "backupSharePairId": PAIR_ID,
            "cipherText": CIPHER_TEXT,
        },
    },
}
CLIENT_ANSWER = {"cipherText": CIPHER_TEXT}

HEALTH = {"status": "ok"}
READY = {
    "status": "ready",
    "checks": {"broker": "ok", "database": "ok", "clock": "ok"},
    "nodes": {"broker": "rabbitmq-1:5672"},
    "clock_offset_seconds": 0.002,
}
UNAVAILABLE = {
    "status": "unavailable",
    "checks": {"broker": "down", "database": "ok", "clock": "down"},
    "nodes": {"broker": None},
    "down": {
        "broker": "not connected for 3.2s (connection lost: ConnectionRefusedError); reconnecting",
        "clock": "clock_skew: this gateway's clock is +0.742s (±0.001s) off PostgreSQL's, beyond"
        " MAX_CLOCK_SKEW 0.5s",
    },
    "clock_offset_seconds": 0.742,
}

# The error code each status usually carries (the body is always {"error": {"code", "message"}}).
ERROR_CODES = {
    "400": ("malformed_json", "body is not valid JSON"),
    "401": ("unauthorized", "missing or wrong X-Webhook-Secret"),
    "403": ("forbidden", "this bearer token belongs to another client"),
    "404": ("not_found", "no client backup share matches"),
    "408": ("body_timeout", "the request body did not arrive within 5s"),
    "409": ("too_many_methods", "this client already holds the most backup methods allowed"),
    "413": ("body_too_large", "body exceeds 65536 bytes"),
    "415": ("unsupported_media_type", "Content-Type must be application/json"),
    "422": ("invalid_body", "clientId: String should have at least 1 character"),
    "429": ("too_many_requests", "too many requests for this client; retry after Retry-After"),
    "500": ("undecryptable", "a stored share failed to authenticate and is not served"),
    "503": ("broker_unavailable", "the queue did not confirm; retry shortly"),
}


# The client routes prove a Portal bearer rather than the webhook secret.
BEARER_401 = ("unauthorized", "missing, malformed or refused bearer token")


def error_example(status: str, security: str | None = None) -> dict[str, Any]:
    code, message = (
        BEARER_401 if (status, security) == ("401", "portalBearer") else ERROR_CODES[status]
    )
    return {"error": {"code": code, "message": message}}
