"""The write path shared by every endpoint that accepts a share: seal, publish, wait for commit."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from sharevault.crypto import Identity
from sharevault.schemas import AcceptedAnswer, ShareMessage
from sharevault.service.keys import BROKER, CLOCK, KEYRING, SETTINGS, WAITER

log = logging.getLogger(__name__)


async def accept_share(app: web.Application, identity: Identity, share: bytes) -> AcceptedAnswer:
    """Seal the share, publish it with confirm, and wait (bounded) for the worker's commit."""
    settings, waiter = app[SETTINGS], app[WAITER]
    message = ShareMessage.build(
        message_id=uuid.uuid4().hex,
        version=app[CLOCK].next(),
        identity=identity,
        sealed=app[KEYRING].seal(share, identity),
    )
    waiter.expect(message.message_id, identity, message.version)
    try:
        await app[BROKER].publish(message, timeout=settings.publish_timeout)
        committed = settings.commit_wait > 0 and await waiter.wait(
            message.message_id, settings.commit_wait
        )
    finally:
        waiter.forget(message.message_id)
    if not committed and settings.commit_wait > 0:
        log.info("commit wait ran out for message %s; durable in queue", message.message_id)
    return AcceptedAnswer(
        messageId=message.message_id, status="committed" if committed else "queued"
    )
