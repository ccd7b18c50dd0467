"""Who may call: Portal's webhook secret (current or previous), compared in constant time."""

from __future__ import annotations

import hmac

from aiohttp import web

from sharevault.service.appkeys import SETTINGS
from sharevault.service.errors import ApiError
from sharevault.service.ratelimit import count_failed_auth, refuse_if_failing_auth

SECRET_HEADER = "X-Webhook-Secret"  # noqa: S105 (a header name, not a secret)


def secret_matches(presented: bytes, secrets: list[bytes]) -> bool:
    """Constant time per secret, and every secret is compared whatever the first answers."""
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(presented, secret)
    return matched


async def require_webhook_secret(request: web.Request) -> None:
    """401 unless the header holds a secret; 429 while this address fails too often."""
    refuse_if_failing_auth(request)
    # Header bytes that are not UTF-8 reach us as surrogates: they encode back to what was sent
    # (and match no secret) instead of failing to encode.
    presented = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
    if not presented or not secret_matches(presented, request.app[SETTINGS].webhook_secrets):
        count_failed_auth(request)
        raise ApiError(401, "unauthorized", f"missing or wrong {SECRET_HEADER}")
