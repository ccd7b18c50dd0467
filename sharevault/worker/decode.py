"""From a queue message to the rows it stores: shared by the worker and `sharevault replay`.

A message holds one share (a ShareMessage) or a batch the gateway coalesced ({"shares":
[ShareMessage, ...]}), in MessagePack or, from an earlier version, JSON (schemas/message.py).
A share of a batch that cannot be stored is set apart on its own, so that one bad share never
holds back the others of its batch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import BaseModel, ValidationError

from sharevault.crypto import DecryptError, Keyring
from sharevault.db import SealedRow
from sharevault.logs import new_request_id
from sharevault.messages import (
    BATCH_CONTENT_TYPES,
    SHARES_HEADER,
    SINGLE_CONTENT_TYPE,
    ShareMessage,
    UndecodableError,
    decode_message,
    encode_item,
    single_type_of,
)

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
    content_type: str | None  # of `body`
    whole: bool = False  # the entire message, not one share of a batch


@dataclass(frozen=True, slots=True)
class Contents:
    opened: list[Opened]
    flawed: list[Flawed]
    batch: bool


class _Batch(BaseModel):
    shares: list[ShareMessage]


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
    batch = content_type in BATCH_CONTENT_TYPES
    try:
        data = decode_message(body, content_type)
    except UndecodableError:
        return _invalid(body, message_id, carried, content_type, batch=batch)
    if not batch:
        try:
            message = ShareMessage.model_validate(data)
        except ValidationError:
            return _invalid(body, message_id, carried, content_type, batch=False)
        share = _open(message, keyring, carried, (body, content_type))
        return Contents(*_split([share]), batch=False)
    try:
        messages = _Batch.model_validate(data).shares
    except ValidationError:
        return _open_loose(data, body, keyring, content_type, message_id, carried)
    return Contents(*_split([_open(m, keyring, carried) for m in messages]), batch=True)


def _open_loose(
    data: Any,
    body: bytes,
    keyring: Keyring,
    content_type: str | None,
    message_id: str,
    carried: dict[str, str],
) -> Contents:
    """A batch with a bad share: validate its shares one by one."""
    items = data.get("shares") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return _invalid(body, message_id, carried, content_type, batch=True)
    shares: list[Opened | Flawed] = []
    for index, item in enumerate(items):
        try:
            message = ShareMessage.model_validate(item)
        except ValidationError:
            item_id = item.get("message_id") if isinstance(item, dict) else None
            name = item_id if isinstance(item_id, str) and item_id else f"{message_id}.{index}"
            raw = encode_item(item, content_type)
            shares.append(Flawed(raw, name, carried, Flaw.INVALID, single_type_of(content_type)))
            continue
        shares.append(_open(message, keyring, carried))
    return Contents(*_split(shares), batch=True)


def _open(
    message: ShareMessage,
    keyring: Keyring,
    carried: dict[str, str],
    whole: tuple[bytes, str | None] | None = None,
) -> Opened | Flawed:
    """`whole`: the body and content type of a message that carries this share alone."""
    context = message.context or carried
    try:
        # Refuse to store what we could never serve back.
        keyring.open(message.sealed, message.identity)
    except DecryptError:
        if whole is not None:
            body, content_type = whole
            return Flawed(
                body, message.message_id, context, Flaw.UNDECRYPTABLE, content_type, whole=True
            )
        return Flawed(
            message.encode(), message.message_id, context, Flaw.UNDECRYPTABLE, SINGLE_CONTENT_TYPE
        )
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


def _invalid(
    body: bytes, message_id: str, carried: dict[str, str], content_type: str | None, *, batch: bool
) -> Contents:
    flawed = Flawed(body, message_id, carried, Flaw.INVALID, content_type, whole=True)
    return Contents([], [flawed], batch)


def _split(shares: list[Opened | Flawed]) -> tuple[list[Opened], list[Flawed]]:
    opened = [s for s in shares if isinstance(s, Opened)]
    flawed = [s for s in shares if isinstance(s, Flawed)]
    return opened, flawed
