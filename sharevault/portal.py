"""Portal's REST API: the only module that speaks HTTP to Portal (whoami, report-back, webhook)."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from sharevault import __version__
from sharevault.schemas.common import UNKNOWN_METHOD
from sharevault.schemas.portal import (
    PortalClientInfo,
    StoredReportV1,
    StoredReportV2,
    StoredReportV3,
    WebhookRegistration,
)

T = TypeVar("T")

WHOAMI = "/api/v3/clients/me"
REPORT_V3 = "/api/v3/clients/me/backup-share-pairs"
REPORT_V2 = "/api/v2/clients/me/wallet/stored-client-backup-share"
# A share stored without a method is reported as the app's own `storedClientBackupShare(true)` of
# Portal's first SDKs reports it: `{"success": true}` here, no method (README, "Client shares").
REPORT_V1 = "/api/v1/clients/me/wallet/stored-client-backup-share"
WEBHOOK = "/api/webhook"
# Portal's error text is shown to an operator at most; keep it short.
DETAIL_CHARS = 500


class PortalError(Exception):
    """Portal did not do what we asked. The message names the status; never a token or body."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        # Portal's own words (an error body), for an operator's eyes only; never logged here.
        self.detail = detail


class PortalUnavailable(PortalError):
    """Worth retrying: network failure, timeout, 429 or 5xx (with Portal's Retry-After, if any)."""


class PortalRejected(PortalError):
    """Not worth retrying: Portal refused the request (a 4xx other than 429)."""


@dataclass(frozen=True, slots=True)
class PortalAnswer:
    status: int
    text: str


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class PortalClient:
    """One pooled HTTP session toward Portal; open it with `async with`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owned = session is None

    async def __aenter__(self) -> PortalClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"User-Agent": f"sharevault/{__version__}"}
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._owned and self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        bearer: str,
        body: BaseModel | None = None,
        request_id: str | None = None,
    ) -> PortalAnswer:
        if self._session is None:
            raise RuntimeError("PortalClient used outside `async with`")
        headers = {"Authorization": f"Bearer {bearer}"}
        if request_id:
            headers["X-Request-Id"] = request_id
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body.model_dump(mode="json", by_alias=True)
        try:
            async with self._session.request(
                method, self.base_url + path, timeout=self._timeout, **kwargs
            ) as resp:
                text = await resp.text(errors="replace")
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # The exception text may name the URL; the type is enough and carries no secret.
            raise PortalUnavailable(f"{method} {path}: {type(exc).__name__}") from None
        if 200 <= status < 300:
            return PortalAnswer(status, text)
        error = PortalUnavailable if status == 429 or status >= 500 else PortalRejected
        raise error(
            f"{method} {path}: HTTP {status}",
            status=status,
            retry_after=parse_retry_after(retry_after),
            detail=text[:DETAIL_CHARS],
        )

    async def whoami(self, bearer: str) -> str:
        """The id of the client this bearer belongs to (PortalRejected when Portal refuses it)."""
        answer = await self._request("GET", WHOAMI, bearer=bearer)
        try:
            return PortalClientInfo.model_validate_json(answer.text).id
        except ValidationError:
            raise PortalUnavailable(
                f"GET {WHOAMI}: unexpected answer", status=answer.status
            ) from None

    async def report_stored_v3(
        self, bearer: str, pair_ids: list[str], *, request_id: str | None = None
    ) -> int:
        """Tell Portal these backup share pairs are stored (v3); returns Portal's status."""
        body = StoredReportV3(backup_share_pair_ids=pair_ids)
        answer = await self._request(
            "PATCH", REPORT_V3, bearer=bearer, body=body, request_id=request_id
        )
        return answer.status

    async def report_stored_v2(
        self, bearer: str, backup_method: str, *, request_id: str | None = None
    ) -> int:
        """Tell Portal the client backup share of this method is stored (v1/v2 SDKs).

        UNKNOWN is our storage key for "no method", not one of Portal's methods: such a share is
        reported without one, on the v1 path, as the app that sent it reports it itself.
        """
        path, body = self.stored_report(backup_method)
        answer = await self._request("PUT", path, bearer=bearer, body=body, request_id=request_id)
        return answer.status

    @staticmethod
    def stored_report(backup_method: str) -> tuple[str, StoredReportV1 | StoredReportV2]:
        """Path and body of a v1/v2 report: never a method Portal does not know ("UNKNOWN")."""
        if backup_method in ("", UNKNOWN_METHOD):
            return REPORT_V1, StoredReportV1()
        return REPORT_V2, StoredReportV2(backup_method=backup_method)

    async def register_webhook(self, api_key: str, url: str, secret: str) -> PortalAnswer:
        """Register the custodian webhook root and its secret with the custodian API key."""
        body = WebhookRegistration(webhook=url, secret=secret)
        return await self._request("POST", WEBHOOK, bearer=api_key, body=body)


class _WaitRetryAfter:
    """Jittered exponential backoff, but never shorter than Portal's Retry-After."""

    def __init__(self, initial: float, cap: float) -> None:
        self._backoff = wait_random_exponential(multiplier=initial, max=cap)

    def __call__(self, state: RetryCallState) -> float:
        return max(_hint(state), self._backoff(state))


def _hint(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    hint = exc.retry_after if isinstance(exc, PortalUnavailable) else None
    return hint or 0.0


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    max_wait: float,
    initial: float = 0.1,
) -> T:
    """Retry PortalUnavailable with backoff; stop early when Retry-After asks more than max_wait."""

    def stop(state: RetryCallState) -> bool:
        return state.attempt_number >= attempts or _hint(state) > max_wait

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(PortalUnavailable),
        wait=_WaitRetryAfter(initial, max_wait),
        stop=stop,
        reraise=True,
        sleep=asyncio.sleep,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
