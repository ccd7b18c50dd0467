"""Portal's custodian webhooks: `POST {root}/backup` and `{root}/backup/fetch` (contract §1)."""

from __future__ import annotations

import logging

from aiohttp import web

from sharevault.crypto import Identity
from sharevault.schemas import WebhookBackup, WebhookFetch
from sharevault.service.appkeys import KEYRING, STORE
from sharevault.service.auth import require_webhook_secret
from sharevault.service.bodies import json_answer, read_model
from sharevault.service.deadline import Deadline, timed_out
from sharevault.service.ingest import accept_share
from sharevault.service.ipfilter import require_allowed_ip
from sharevault.service.ratelimit import limit_client_writes
from sharevault.service.reading import open_stored

log = logging.getLogger(__name__)

CUSTODIAN = "custodian"


async def backup(request: web.Request) -> web.Response:
    """Store a custodian share; 200 only after the broker confirmed it (and, in budget, commit)."""
    deadline = Deadline.of(request)
    require_allowed_ip(request)
    await require_webhook_secret(request)
    body = await read_model(request, WebhookBackup)
    limit_client_writes(request, CUSTODIAN, body.client_id)
    identity = Identity(CUSTODIAN, body.client_id, body.backup_method, body.backup_share_pair_id)
    answer = await accept_share(request, identity, body.share_text.encode(), deadline=deadline)
    return json_answer(answer)


async def backup_fetch(request: web.Request) -> web.Response:
    """Every stored custodian share of the client, newest first, exactly as Portal sent it."""
    deadline = Deadline.of(request)
    require_allowed_ip(request)
    await require_webhook_secret(request)
    body = await read_model(request, WebhookFetch)
    keyring = request.app[KEYRING]
    try:
        found = await request.app[STORE].client_shares(
            CUSTODIAN, body.client_id, timeout=deadline.remaining()
        )
    except TimeoutError:
        raise timed_out("the database") from None
    shares = [open_stored(keyring, CUSTODIAN, body.client_id, stored) for stored in found]
    answer: dict[str, object] = {"backupShares": shares}
    if shares:
        answer["backupShare"] = shares[0]
    return web.json_response(answer)


def add_routes(app: web.Application, root: str) -> None:
    app.router.add_post(f"{root}/backup", backup)
    app.router.add_post(f"{root}/backup/fetch", backup_fetch)
