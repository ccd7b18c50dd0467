"""Client backup shares: `POST`/`GET {client_root}/clients/{clientId}/backup` (contract §2)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from pydantic import SecretStr, TypeAdapter, ValidationError

from sharevault.crypto import Identity
from sharevault.db import StoredShare
from sharevault.schemas import UNKNOWN_METHOD, ClientBackup, ClientBackupAnswer, ClientBackupQuery
from sharevault.schemas.common import ClientId
from sharevault.service.appkeys import CLIENT_AUTH, KEYRING, SETTINGS, STORE
from sharevault.service.bodies import describe_validation, json_answer, read_model
from sharevault.service.deadline import Deadline, timed_out
from sharevault.service.errors import ApiError
from sharevault.service.ingest import accept_share
from sharevault.service.ratelimit import (
    count_failed_auth,
    limit_client_writes,
    refuse_if_failing_auth,
)
from sharevault.service.reading import open_stored

log = logging.getLogger(__name__)

CLIENT = "client"
_CLIENT_ID: TypeAdapter[str] = TypeAdapter(ClientId)


def path_client_id(request: web.Request) -> str:
    """`{clientId}` from the path, held to the same rule as a body's clientId."""
    try:
        return _CLIENT_ID.validate_python(request.match_info["clientId"])
    except ValidationError:
        raise ApiError(
            422, "invalid_client_id", "clientId must be 1-255 printable ASCII characters"
        ) from None


def report_api_for(setting: str, pair_id: str) -> str | None:
    """Which Portal report follows the store: v3 needs a pair id, v2 does with the method."""
    if setting == "off":
        return None
    return "v3" if setting == "v3" and pair_id else "v2"


def lookup_order(
    shares: list[StoredShare], backup_method: str | None, pair_id: str | None
) -> list[StoredShare]:
    """PortalEx's order: by pair id if given, else by method (UNKNOWN if none); then UNKNOWN.
    The reference for `Store.client_share`, which picks the first of these in SQL."""
    if pair_id:
        first = [s for s in shares if s.pair_id == pair_id]
    else:
        method = backup_method or UNKNOWN_METHOD
        first = [s for s in shares if s.backup_method == method]
    legacy = [s for s in shares if s.backup_method == UNKNOWN_METHOD and s not in first]
    return first + legacy


async def authenticate(
    request: web.Request, client_id: str, deadline: Deadline
) -> SecretStr | None:
    """The client's proof, asked of Portal for at most the identity check's share of the budget."""
    seconds = deadline.remaining(request.app[SETTINGS].identity_check)
    refuse_if_failing_auth(request)
    try:
        async with asyncio.timeout(seconds):
            return await request.app[CLIENT_AUTH].authenticate(request, client_id)
    except ApiError as exc:
        if exc.status in (401, 403):
            count_failed_auth(request)
        raise
    except TimeoutError:
        raise ApiError(
            503,
            "portal_unavailable",
            "Portal could not confirm who you are in time; retry shortly",
            headers={"Retry-After": "1"},
        ) from None


async def backup(request: web.Request) -> web.Response:
    """Store the caller's client backup share; 200 once durable, saying committed or queued."""
    deadline = Deadline.of(request)
    client_id = path_client_id(request)
    bearer = await authenticate(request, client_id, deadline)
    limit_client_writes(request, CLIENT, client_id)
    body = await read_model(request, ClientBackup)
    identity = Identity(CLIENT, client_id, body.backup_method, body.backup_share_pair_id)
    report_api = report_api_for(request.app[SETTINGS].portal_report_api, identity.pair_id)
    answer = await accept_share(
        request,
        identity,
        body.share_text.encode(),
        deadline=deadline,
        report_api=report_api,
        bearer=bearer,
    )
    return json_answer(answer)


async def get_backup(request: web.Request) -> web.Response:
    """The caller's client backup share for recovery, or 404 when none matches."""
    deadline = Deadline.of(request)
    client_id = path_client_id(request)
    await authenticate(request, client_id, deadline)
    try:
        query = ClientBackupQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise ApiError(422, "invalid_query", describe_validation(exc)) from None
    try:
        stored = await request.app[STORE].client_share(
            client_id,
            query.backup_method,
            query.backup_share_pair_id,
            unknown=UNKNOWN_METHOD,
            timeout=deadline.remaining(),
        )
    except TimeoutError:
        raise timed_out("the database") from None
    if stored is None:
        raise ApiError(404, "not_found", "no client backup share matches")
    text = open_stored(request.app[KEYRING], CLIENT, client_id, stored)
    return json_answer(ClientBackupAnswer(cipherText=text))


def add_routes(app: web.Application, root: str) -> None:
    app.router.add_post(f"{root}/clients/{{clientId}}/backup", backup)
    app.router.add_get(f"{root}/clients/{{clientId}}/backup", get_backup)
