"""The write path shared by every endpoint that accepts a share: seal, publish, wait for commit."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time

from aiohttp import web
from prometheus_client import Counter
from pydantic import SecretStr

from sharevault import hops, otel
from sharevault.broker import BrokerUnavailable
from sharevault.clock import ClockDiscipline
from sharevault.config import Settings
from sharevault.crypto import Identity
from sharevault.messages import ShareMessage, bearer_identity
from sharevault.metrics import (
    COMMIT_WAIT_SECONDS,
    COMMIT_WAITS,
    PUBLISH_FAILURES,
    PUBLISH_SECONDS,
)
from sharevault.service.appkeys import (
    CLOCK,
    DISCIPLINE,
    KEYRING,
    SETTINGS,
    SHARES,
    WAITER,
)
from sharevault.service.bodies import Accepted
from sharevault.service.commits import CommitWaiter, Verdict
from sharevault.service.deadline import Deadline, timed_out
from sharevault.service.errors import ApiError
from sharevault.service.request_ids import propagation_headers

log = logging.getLogger(__name__)

_UNTRACED = contextlib.nullcontext()


@functools.cache
def _commit_waits(outcome: str) -> Counter:
    # Resolved once per outcome: `.labels()` takes a lock and builds a key on every call.
    return COMMIT_WAITS.labels(outcome)


def _refusal(reason: str | None, settings: Settings) -> ApiError:
    """409 for a share the worker's statement refused for a bound (db.REFUSALS): it is parked in
    the DLQ (reason `rejected`), never stored."""
    if reason == "methods_per_client":
        return ApiError(
            409,
            "too_many_methods",
            f"this client already holds {settings.methods_per_client} backup methods"
            " (METHODS_PER_CLIENT): back up under one of them",
        )
    return ApiError(409, "refused", "the share was refused by a bound of its client")


def refuse_if_skewed(discipline: ClockDiscipline) -> None:
    """503 `clock_skew` while this gateway's clock is beyond MAX_CLOCK_SKEW of PostgreSQL's: a
    version from it could lose a newer write or outvote later ones (reads go on)."""
    if discipline.skewed:
        raise ApiError(
            503,
            "clock_skew",
            "this gateway's clock is off beyond MAX_CLOCK_SKEW; retry, another gateway may take it",
            headers={"Retry-After": discipline.retry_after},
        )


async def accept_share(
    request: web.Request,
    identity: Identity,
    share: bytes,
    *,
    deadline: Deadline,
    report_api: str | None = None,
    bearer: SecretStr | None = None,
) -> Accepted:
    """Seal the share, publish it with confirm, and wait (bounded) for the worker's commit;
    every wait ends by `deadline`: 503 before the confirm, 200 `queued` after it."""
    # With `report_api` and `bearer`, the worker tells Portal once the share is stored.
    if hops.ON:
        hops.mark()
    app = request.app
    settings, waiter, keyring = app[SETTINGS], app[WAITER], app[KEYRING]
    refuse_if_skewed(app[DISCIPLINE])
    publish_timeout = deadline.remaining(settings.publish_timeout)
    if publish_timeout <= 0:
        raise timed_out("the queue")
    # 32 hex digits, as uuid4().hex gave, at a fifth of its cost.
    message_id = os.urandom(16).hex()
    version = app[CLOCK].next()
    sealed_bearer = None
    if report_api is not None and bearer is not None:
        secret = bearer.get_secret_value().encode()
        sealed_bearer = keyring.seal(secret, bearer_identity(identity), version, message_id)
    waiter.expect(message_id, identity, version)
    try:
        started = time.perf_counter()
        # Without an SDK a span records nothing and the trace context has nothing to add, yet
        # both cost more than asking once whether one is installed.
        traced = otel.active()
        span = (
            otel.span("sharevault.publish", request.headers, kind=identity.kind)
            if traced
            else _UNTRACED
        )
        try:
            with span:
                # Inside the span, so that the worker's span becomes its child.
                context = propagation_headers(request)
                message = ShareMessage.build(
                    message_id=message_id,
                    version=version,
                    identity=identity,
                    sealed=keyring.seal(share, identity, version, message_id),
                    report_api=None if sealed_bearer is None else report_api,
                    bearer_sealed=sealed_bearer,
                    context=otel.inject(context) if traced else context,
                )
                if hops.ON:
                    hops.mark()
                await app[SHARES].publish(message, timeout=publish_timeout)
        except BrokerUnavailable:
            PUBLISH_FAILURES.inc()
            raise
        confirmed = time.perf_counter()
        PUBLISH_SECONDS.observe(confirmed - started)
        if hops.ON:
            hops.mark()
        committed = settings.commit_wait > 0 and await _wait_for_commit(
            waiter, message_id, settings, deadline
        )
        if hops.ON:
            hops.mark(message_id)
    finally:
        waiter.forget(message_id)
    if settings.commit_wait > 0:
        _commit_waits("committed" if committed else "budget_exhausted").inc()
        if committed:
            COMMIT_WAIT_SECONDS.observe(time.perf_counter() - confirmed)
        else:
            log.info("commit wait ran out for message %s; durable in queue", message_id)
    log.debug("accepted message %s (%s share)", message_id, identity.kind)
    return Accepted(message_id, "committed" if committed else "queued")


async def _wait_for_commit(
    waiter: CommitWaiter, message_id: str, settings: Settings, deadline: Deadline
) -> bool:
    """Whether the message is committed within COMMIT_WAIT, or what the deadline leaves after
    room for the last look at the table (DB_TIMEOUT); 409 if the database refused it."""
    left = deadline.remaining()
    last_look = min(settings.db_timeout, left / 2)
    budget = min(settings.commit_wait, left - last_look)
    if budget <= 0:
        return False
    # Within the deadline by construction: every look at the table is bounded (its timeout
    # covers the pool wait and the statement), the last one by `last_look`. (No timer of its own:
    # one per request costs the event loop more than the whole wait.)
    verdict = await waiter.wait(message_id, budget, last_look)
    if verdict is Verdict.REFUSED:
        raise _refusal(waiter.reason(message_id), settings)
    return verdict is Verdict.COMMITTED
