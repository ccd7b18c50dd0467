"""From a queue message to the rows it stores: shared by the worker and `sharevault replay`.

A message holds one share (application/json, a ShareMessage) or a batch the gateway coalesced
({"shares": [ShareMessage, ...]}). A share of a batch that cannot be stored is set apart on its
own, so that one bad share never holds back the others of its batch."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import BaseModel, ValidationError

from sharevault.crypto import DecryptError, Keyring
from sharevault.logs import new_request_id
from sharevault.schemas import ShareMessage
from sharevault.schemas.message import BATCH_CONTENT_TYPE, SHARES_HEADER
from sharevault.store import SealedRow

# The message headers that travel with a share (ids of the request, never secrets).
CONTEXT_HEADERS = ("x-request-id", "traceparent", "tracestate")


class Flaw(Enum):
    """Why a message or a share of a batch can never be stored."""

    INVALID = "invalid"
    UNDECRYPTABLE = "undecryptable"


@dataclass(frozen=True, slots=True)
class Opened:
    """A share ready to store, with the ids of the request that brought it."""

    message: ShareMessage
    row: SealedRow
    context: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Flawed:
    """A message, or one share of a batch, that can never be stored: what to park, and why."""

    body: bytes
    message_id: str
    context: Mapping[str, str]
    flaw: Flaw
    whole: bool = False  # the entire message, not one share of a batch


@dataclass(frozen=True, slots=True)
class Contents:
    opened: list[Opened]
    flawed: list[Flawed]
    batch: bool


class _Batch(BaseModel):
    shares: list[ShareMessage]


class _LooseBatch(BaseModel):
    shares: list[Any]


def shares_in(headers: Mapping[str, Any] | None) -> int:
    """How many shares a message says it carries (1 unless it is a batch)."""
    value = (headers or {}).get(SHARES_HEADER, 1)
    return value if isinstance(value, int) and value > 0 else 1


def context_of(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The request id and trace context among a message's headers (AMQP may give bytes)."""
    out: dict[str, str] = {}
    for key in CONTEXT_HEADERS:
        value = (headers or {}).get(key)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, str):
            out[key] = value
    return out


def open_body(
    body: bytes,
    keyring: Keyring,
    *,
    content_type: str | None = None,
    message_id: str = "",
    headers: Mapping[str, Any] | None = None,
) -> Contents:
    """Every share of a message: those to store, and those (or the whole message) to park."""
    carried = context_of(headers)
    if content_type != BATCH_CONTENT_TYPE:
        try:
            message = ShareMessage.model_validate_json(body)
        except ValidationError:
            return Contents(
                [], [Flawed(body, message_id, carried, Flaw.INVALID, whole=True)], batch=False
            )
        share = _open(message, keyring, carried, body)
        return Contents(*_split([share]), batch=False)
    try:
        messages = _Batch.model_validate_json(body).shares
    except ValidationError:
        return _open_loose(body, keyring, message_id, carried)
    return Contents(*_split([_open(m, keyring, carried) for m in messages]), batch=True)


def _open_loose(
    body: bytes, keyring: Keyring, message_id: str, carried: dict[str, str]
) -> Contents:
    """A batch with a bad share: validate its shares one by one."""
    try:
        items = _LooseBatch.model_validate_json(body).shares
    except ValidationError:
        return Contents(
            [], [Flawed(body, message_id, carried, Flaw.INVALID, whole=True)], batch=True
        )
    shares: list[Opened | Flawed] = []
    for index, item in enumerate(items):
        try:
            message = ShareMessage.model_validate(item)
        except ValidationError:
            raw = json.dumps(item).encode()
            item_id = item.get("message_id") if isinstance(item, dict) else None
            name = item_id if isinstance(item_id, str) and item_id else f"{message_id}.{index}"
            shares.append(Flawed(raw, name, carried, Flaw.INVALID))
            continue
        shares.append(_open(message, keyring, carried))
    return Contents(*_split(shares), batch=True)


def _open(
    message: ShareMessage, keyring: Keyring, carried: dict[str, str], body: bytes | None = None
) -> Opened | Flawed:
    context = message.context or carried
    try:
        # Refuse to store what we could never serve back.
        keyring.open(message.sealed, message.identity)
    except DecryptError:
        if body is not None:
            return Flawed(body, message.message_id, context, Flaw.UNDECRYPTABLE, whole=True)
        return Flawed(message.encode(), message.message_id, context, Flaw.UNDECRYPTABLE)
    row = SealedRow(
        message.identity,
        message.sealed,
        message.version,
        message.message_id,
        report_api=message.report_api,
        bearer_sealed=message.bearer_sealed,
        request_id=new_request_id(context.get("x-request-id")),
    )
    return Opened(message, row, context)


def _invalid(body: bytes, message_id: str, carried: dict[str, str], *, batch: bool) -> Contents:
    return Contents([], [Flawed(body, message_id, carried, Flaw.INVALID, whole=True)], batch)


def _split(shares: list[Opened | Flawed]) -> tuple[list[Opened], list[Flawed]]:
    opened = [s for s in shares if isinstance(s, Opened)]
    flawed = [s for s in shares if isinstance(s, Flawed)]
    return opened, flawed
