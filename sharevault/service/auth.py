"""Who may call: Portal's webhook secret (current or previous), compared in constant time."""

from __future__ import annotations

import hmac

from aiohttp import web

from sharevault.service.appkeys import SETTINGS
from sharevault.service.errors import ApiError

SECRET_HEADER = "X-Webhook-Secret"  # noqa: S105 (a header name, not a secret)


def secret_matches(presented: bytes, secrets: list[bytes]) -> bool:
    """Constant time per secret, and every secret is compared whatever the first answers."""
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(presented, secret)
    return matched


def require_webhook_secret(request: web.Request) -> None:
    presented = request.headers.get(SECRET_HEADER, "").encode()
    if not presented or not secret_matches(presented, request.app[SETTINGS].webhook_secrets):
        raise ApiError(401, "unauthorized", f"missing or wrong {SECRET_HEADER}")
