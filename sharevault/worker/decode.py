"""From a queue message to the shares it stores: shared by the worker and `sharevault replay`.

A message holds one share or a batch the gateway coalesced (messages.parse_body). A share of a
batch that cannot be stored is set apart on its own, so that one bad share never holds back the
others of its batch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sharevault.crypto import DecryptError, Keyring, TamperedError
from sharevault.db import SealedRow
from sharevault.logs import new_request_id
from sharevault.messages import (
    SINGLE_CONTENT_TYPE,
    Envelope,
    Invalid,
    ShareMessage,
    context_of,
    one_of_batch,
    parse_body,
)


class Flaw(Enum):
    """Why a message or a share of a batch can never be stored."""

    INVALID = "invalid"
    UNDECRYPTABLE = "undecryptable"
    # Sealed for another version or message id than it claims, a legacy seal no longer
    # accepted, or a version further ahead of our clock than MAX_CLOCK_SKEW.
    TAMPERED = "tampered"


@dataclass(frozen=True, slots=True)
class Share:
    """A share in hand, ready to store, with the ids of the request that brought it."""

    message: ShareMessage
    row: SealedRow
    context: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Unstorable:
    """A message, or one share of a batch, that can never be stored: what to park, and why."""

    body: bytes
    message_id: str
    context: Mapping[str, str]
    flaw: Flaw
    content_type: str | None  # of `body`
    whole: bool = False  # the entire message, not one share of a batch


@dataclass(frozen=True, slots=True)
class Decoded:
    """Every share of one message: those to store, those to park, and whether it was a batch."""

    shares: list[Share]
    unstorable: list[Unstorable]
    batch: bool

    def envelope_of(self, delivered: Envelope, share: Share | Unstorable) -> Envelope:
        """What moves to a retry level or the DLQ for this share: the message as delivered
        when it carries this share alone (a batch is never moved whole by the worker)."""
        if not self.batch or (isinstance(share, Unstorable) and share.whole):
            return delivered
        if isinstance(share, Share):
            body, message_id = share.message.encode(), share.row.message_id
            content_type: str | None = SINGLE_CONTENT_TYPE
        else:
            body, message_id, content_type = share.body, share.message_id, share.content_type
        return one_of_batch(delivered, body, message_id, share.context, content_type)


def open_body(
    body: bytes,
    keyring: Keyring,
    *,
    content_type: str | None = None,
    message_id: str = "",
    headers: Mapping[str, Any] | None = None,
    latest: int | None = None,
) -> Decoded:
    """Every share of a message: those to store, and those (or the whole message) to park.
    `latest`: the newest version believable now (µs); a share claiming a later one is tampered."""
    carried = context_of(headers)
    batch, items = parse_body(body, content_type, message_id)
    whole = None if batch else (body, content_type)
    opened = [_open(item, keyring, carried, whole, latest) for item in items]
    return Decoded(
        [s for s in opened if isinstance(s, Share)],
        [s for s in opened if isinstance(s, Unstorable)],
        batch,
    )


def _open(
    item: ShareMessage | Invalid,
    keyring: Keyring,
    carried: dict[str, str],
    whole: tuple[bytes, str | None] | None,
    latest: int | None,
) -> Share | Unstorable:
    """`whole`: the body and content type of a message that carries this share alone."""
    if isinstance(item, Invalid):
        return Unstorable(
            item.body, item.message_id, carried, Flaw.INVALID, item.content_type, item.whole
        )
    message = item
    context = message.context or carried
    flaw = Flaw.TAMPERED if latest is not None and message.version > latest else None
    if flaw is None:
        try:
            # Refuse to store what we could never serve back, or what was sealed for another
            # message (a share re-published under a new version rolls nothing back).
            keyring.open(message.sealed, message.identity, message.version, message.message_id)
        except TamperedError:
            flaw = Flaw.TAMPERED
        except DecryptError:
            flaw = Flaw.UNDECRYPTABLE
    if flaw is not None:
        if whole is not None:
            body, content_type = whole
            return Unstorable(body, message.message_id, context, flaw, content_type, whole=True)
        return Unstorable(message.encode(), message.message_id, context, flaw, SINGLE_CONTENT_TYPE)
    row = SealedRow(
        message.identity,
        message.sealed,
        message.version,
        message.message_id,
        report_api=message.report_api,
        bearer_sealed=message.bearer_sealed,
        request_id=new_request_id(context.get("x-request-id")),
    )
    return Share(message, row, context)
