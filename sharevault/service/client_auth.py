"""Who may touch a client's backup share: the client itself, proven by a Portal bearer token."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
from typing import Protocol

from aiohttp import web
from cachetools import TTLCache
from pydantic import SecretStr

from sharevault.portal import PortalClient, PortalRejected, PortalUnavailable, with_retries
from sharevault.service.errors import ApiError

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 8192
CACHE_ENTRIES = 100_000
# A gateway request may retry Portal a little, not for long: the app is waiting.
WHOAMI_ATTEMPTS = 3
WHOAMI_MAX_WAIT = 1.0
_UNKNOWN = "\0unknown"  # no verdict cached (None is a verdict: Portal refused the token)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sharevault"'}


class ClientAuthenticator(Protocol):
    """Pluggable check put in front of the client endpoints (swap it under `CLIENT_AUTH`)."""

    async def authenticate(self, request: web.Request, client_id: str) -> SecretStr | None:
        """Raise ApiError 401/403/503 unless the caller is `client_id`; the bearer, if any."""
        ...


def bearer_token(request: web.Request) -> str:
    """The token of `Authorization: Bearer <token>`; 401 when missing or malformed."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401, "unauthorized", "Authorization: Bearer <token> is required", headers=_CHALLENGE
        )
    if (
        len(token) > MAX_TOKEN_CHARS
        or not token.isascii()
        or not token.isprintable()
        or " " in token
    ):
        raise ApiError(401, "unauthorized", "malformed bearer token", headers=_CHALLENGE)
    return token


def token_key(token: str) -> bytes:
    """What the verdict cache is keyed by: a hash, so no token outlives its request."""
    return hashlib.sha256(token.encode()).digest()


class PortalBearerAuthenticator:
    """Proves a bearer with Portal's `GET /api/v3/clients/me`; verdicts cached briefly by hash."""

    def __init__(self, portal: PortalClient, *, ttl: float) -> None:
        self._portal = portal
        # client id, or None when Portal refused the token; both expire after `ttl`.
        self._verdicts: TTLCache[bytes, str | None] = TTLCache(CACHE_ENTRIES, ttl)
        self._asking: dict[bytes, asyncio.Task[str | None]] = {}
        self.portal_calls = 0

    async def authenticate(self, request: web.Request, client_id: str) -> SecretStr | None:
        token = bearer_token(request)
        owner = await self.owner_of(token)
        if owner is None:
            raise ApiError(
                401,
                "unauthorized",
                "Portal does not accept this bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="sharevault", error="invalid_token"'},
            )
        if not hmac.compare_digest(owner.encode(), client_id.encode()):
            raise ApiError(403, "forbidden", "this bearer token belongs to another client")
        return SecretStr(token)

    async def owner_of(self, token: str) -> str | None:
        """The client id Portal says the token belongs to, None when Portal refuses it."""
        key = token_key(token)
        cached = self._verdicts.get(key, _UNKNOWN)
        if cached is not _UNKNOWN:
            return cached
        # Concurrent requests with one token share a single question to Portal.
        task = self._asking.get(key)
        if task is None:
            task = asyncio.create_task(self._ask_portal(key, token))
            self._asking[key] = task
            task.add_done_callback(lambda t: self._settled(key, t))
        return await asyncio.shield(task)

    def _settled(self, key: bytes, task: asyncio.Task[str | None]) -> None:
        self._asking.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone away

    async def _ask_portal(self, key: bytes, token: str) -> str | None:
        self.portal_calls += 1
        try:
            owner: str | None = await with_retries(
                lambda: self._portal.whoami(token),
                attempts=WHOAMI_ATTEMPTS,
                max_wait=WHOAMI_MAX_WAIT,
            )
        except PortalRejected as exc:
            if exc.status not in (401, 403):
                log.warning("Portal refused the identity check: %s", exc.reason)
                raise _portal_unavailable(None) from None
            owner = None
        except PortalUnavailable as exc:
            log.warning("Portal unavailable for the identity check: %s", exc.reason)
            raise _portal_unavailable(exc.retry_after) from None
        self._verdicts[key] = owner
        return owner


def _portal_unavailable(retry_after: float | None) -> ApiError:
    seconds = max(1, math.ceil(retry_after or 1))
    return ApiError(
        503,
        "portal_unavailable",
        "Portal could not confirm who you are; retry shortly",
        headers={"Retry-After": str(seconds)},
    )
