"""The message contract: bodies (one sealed share, or a batch the gateway coalesced), their
headers (request context, failure history) and routing keys. The only module that knows msgpack.

MessagePack carries the sealed bytes as they are, where JSON needed base64 (a third more bytes
through RabbitMQ, and the worker's largest CPU cost was decoding it). An earlier version's JSON is
still read (`decode_message`): an upgrade never strands what is queued, retried or dead-lettered."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgpack
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from sharevault.crypto import Identity
from sharevault.schemas.common import BackupMethod, ClientId, PairIdStr

BEARER_KIND = "bearer"
# One share: a ShareMessage as a MessagePack map.
SINGLE_CONTENT_TYPE = "application/vnd.sharevault.share+msgpack"
# Several shares: {"shares": [ShareMessage, ...]} as MessagePack.
BATCH_CONTENT_TYPE = "application/vnd.sharevault.batch+msgpack"
# What earlier versions published, with base64 for bytes; read, no longer written.
JSON_SINGLE_CONTENT_TYPE = "application/json"
JSON_BATCH_CONTENT_TYPE = "application/vnd.sharevault.batch+json"
BATCH_CONTENT_TYPES = (BATCH_CONTENT_TYPE, JSON_BATCH_CONTENT_TYPE)
# Header of a batch message: how many shares it carries (the worker sizes its batches by it).
SHARES_HEADER = "x-sharevault-shares"
# The headers that travel with a share (ids of the request, never secrets).
CONTEXT_HEADERS = ("x-request-id", "traceparent", "tracestate")
# Failure history, set by the worker and the DLQ tools as a message moves (docs/queues.md).
REASON = "x-sharevault-reason"
ERROR = "x-sharevault-error"
ATTEMPTS = "x-sharevault-attempts"
FIRST_FAILURE = "x-sharevault-first-failure"
LAST_FAILURE = "x-sharevault-last-failure"
REPLAYS = "x-sharevault-replays"
# Set by the broker when it dead-letters or redelivers. Dropped whenever we publish a message
# anew: counts start afresh and RabbitMQ's dead-letter cycle detection never sees a false loop.
BROKER_HEADERS = (
    "x-death",
    "x-delivery-count",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)

# Routing keys: on the ingest exchange SHARE_KEY (live) or BACKLOG_KEY (detour); on the recover
# exchange BACKLOG_KEY, DEAD_KEY and retry_key(level).
SHARE_KEY = "share"
BACKLOG_KEY = "backlog"
DEAD_KEY = "dead"
# Retry levels are queues named {prefix}.retry.0 … .7: teardown knows them all.
MAX_RETRY_LEVELS = 8


def retry_key(level: int) -> str:
    return f"retry.{level}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message as it is published or moved: body, id, headers and the body's content type."""

    body: bytes
    message_id: str
    headers: Mapping[str, Any]
    content_type: str | None


def _decode_base64(value: Any) -> Any:
    # Decoded once, here: the model holds bytes; JSON carries base64, MessagePack bytes.
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None


def _encode_base64(value: bytes) -> str:
    return base64.b64encode(value).decode()


# From JSON only a base64 string validates; from MessagePack, bytes. JSON output is base64.
Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_decode_base64),
    PlainSerializer(_encode_base64, return_type=str, when_used="json"),
]


def bearer_identity(identity: Identity) -> Identity:
    """Associated data of a sealed bearer: bound to its share, yet never opens as a share."""
    return Identity(BEARER_KIND, identity.client_id, identity.backup_method, identity.pair_id)


class ShareMessage(BaseModel):
    """Never holds a share in clear: `sealed` is AES-GCM bound to the identity fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    message_id: str = Field(min_length=1, max_length=64)
    # Gateway receive time in µs; ties broken by message_id. Newer wins, older never overwrites.
    version: int = Field(ge=0)
    kind: str = Field(pattern="^(custodian|client)$")
    client_id: ClientId
    backup_method: BackupMethod
    pair_id: PairIdStr
    sealed: Base64Bytes = Field(min_length=1, description="key_id ‖ nonce ‖ ciphertext")
    # Client shares only: which Portal report to send once stored, and the client's bearer to
    # send it with, sealed under `bearer_identity` (custodian messages carry neither).
    report_api: str | None = Field(default=None, pattern="^(v2|v3)$")
    bearer_sealed: Base64Bytes | None = Field(default=None, min_length=1, repr=False)
    # Request id and trace context of the HTTP request that brought it (ids, never secrets);
    # a single message also has them as AMQP headers, a batch only here.
    context: dict[str, str] | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _report_needs_bearer(self) -> ShareMessage:
        if (self.report_api is None) != (self.bearer_sealed is None):
            raise ValueError("report_api and bearer_sealed go together")
        if self.report_api is not None and self.kind != "client":
            raise ValueError("only client shares are reported to Portal")
        return self

    @classmethod
    def build(
        cls,
        *,
        message_id: str,
        version: int,
        identity: Identity,
        sealed: bytes,
        report_api: str | None = None,
        bearer_sealed: bytes | None = None,
        context: dict[str, str] | None = None,
    ) -> ShareMessage:
        return cls(
            message_id=message_id,
            version=version,
            kind=identity.kind,
            client_id=identity.client_id,
            backup_method=identity.backup_method,
            pair_id=identity.pair_id,
            sealed=sealed,
            report_api=report_api,
            bearer_sealed=bearer_sealed,
            context=context or None,
        )

    def envelope(self) -> Envelope:
        """The message alone (SINGLE_CONTENT_TYPE), its request context as headers."""
        return Envelope(self.encode(), self.message_id, self.context or {}, SINGLE_CONTENT_TYPE)

    def encode(self) -> bytes:
        """The message body (SINGLE_CONTENT_TYPE): MessagePack, absent optional fields left out."""
        # By hand rather than model_dump: this runs once per accepted share, and is 4x cheaper.
        fields = {name: getattr(self, name) for name in _WIRE_FIELDS}
        return _pack({name: value for name, value in fields.items() if value is not None})

    @property
    def identity(self) -> Identity:
        return Identity(self.kind, self.client_id, self.backup_method, self.pair_id)


_WIRE_FIELDS = tuple(ShareMessage.model_fields)
_pack = msgpack.Packer().pack
_BATCH_KEY = _pack("shares")


class UndecodableError(ValueError):
    """A body that is not a message of its content type at all (not even a map)."""


def encode_batch(items: Sequence[bytes]) -> bytes:
    """A batch body (BATCH_CONTENT_TYPE) from already encoded messages: a map holding an array
    of them, framed around their bytes with no second serialisation of any share."""
    packer = msgpack.Packer()
    head = packer.pack_map_header(1) + _BATCH_KEY + packer.pack_array_header(len(items))
    return head + b"".join(items)


def batch_envelope(items: Sequence[bytes], message_id: str) -> Envelope:
    """Several encoded messages as one batch message; their contexts travel inside."""
    return Envelope(
        encode_batch(items), message_id, {SHARES_HEADER: len(items)}, BATCH_CONTENT_TYPE
    )


def decode_message(body: bytes, content_type: str | None) -> Any:
    """The plain data of a body by its content type (MessagePack, or an earlier version's JSON),
    not yet validated; UndecodableError when it does not parse at all."""
    try:
        if content_type in (SINGLE_CONTENT_TYPE, BATCH_CONTENT_TYPE):
            return msgpack.unpackb(body)
        return json.loads(body)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # ValueError covers msgpack's ExtraData and FormatError, and bad UTF-8; the text
        # would quote the body, so only the type travels.
        raise UndecodableError(f"not {content_type or 'JSON'}: {type(exc).__name__}") from None


def encode_item(item: Any, content_type: str | None) -> bytes:
    """One share of a batch, as it was, re-encoded as a single message of the batch's format."""
    if content_type == BATCH_CONTENT_TYPE:
        return bytes(_pack(item))
    return json.dumps(item).encode()


def single_type_of(batch_content_type: str | None) -> str:
    """The content type of one share taken out of a batch of this content type."""
    if batch_content_type == BATCH_CONTENT_TYPE:
        return SINGLE_CONTENT_TYPE
    return JSON_SINGLE_CONTENT_TYPE


class _Batch(BaseModel):
    shares: list[ShareMessage]


@dataclass(frozen=True, slots=True)
class Invalid:
    """A body, or one item of a batch, that is no share message: as it came, to be parked."""

    body: bytes
    message_id: str
    content_type: str | None  # of `body`
    whole: bool  # the entire message, not one share of a batch


def parse_body(
    body: bytes, content_type: str | None, message_id: str = ""
) -> tuple[bool, list[ShareMessage | Invalid]]:
    """Whether the body is a batch, and each share message in it (or what is not one)."""
    batch = content_type in BATCH_CONTENT_TYPES
    whole = Invalid(body, message_id, content_type, whole=True)
    try:
        data = decode_message(body, content_type)
    except UndecodableError:
        return batch, [whole]
    try:
        if not batch:
            return False, [ShareMessage.model_validate(data)]
        return True, list(_Batch.model_validate(data).shares)
    except ValidationError:
        pass
    items = data.get("shares") if batch and isinstance(data, dict) else None
    if not isinstance(items, list):
        return batch, [whole]
    # A batch with a bad share: validate its shares one by one.
    parsed: list[ShareMessage | Invalid] = []
    for index, item in enumerate(items):
        try:
            parsed.append(ShareMessage.model_validate(item))
        except ValidationError:
            item_id = item.get("message_id") if isinstance(item, dict) else None
            name = item_id if isinstance(item_id, str) and item_id else f"{message_id}.{index}"
            raw = encode_item(item, content_type)
            parsed.append(Invalid(raw, name, single_type_of(content_type), whole=False))
    return True, parsed


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


def one_of_batch(
    batch: Envelope,
    body: bytes,
    message_id: str,
    context: Mapping[str, str],
    content_type: str | None,
) -> Envelope:
    """One share of a batch as a message of its own, with the batch's headers and its own ids."""
    headers = {k: v for k, v in clean_headers(batch.headers).items() if k != SHARES_HEADER}
    headers.update(context)
    return Envelope(body, message_id, headers, content_type)


def clean_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The message's own headers, without what the broker added on its way."""
    return {k: v for k, v in (headers or {}).items() if k not in BROKER_HEADERS}


def attempts_of(headers: Mapping[str, Any] | None) -> int:
    value = (headers or {}).get(ATTEMPTS, 0)
    return value if isinstance(value, int) else 0


def deliveries_of(headers: Mapping[str, Any] | None) -> int:
    """How many times the current queue has delivered it (quorum queues count returns)."""
    value = (headers or {}).get("x-delivery-count", 0)
    return (value if isinstance(value, int) else 0) + 1


def failure_headers(
    headers: Mapping[str, Any] | None, reason: str, error: str | None, now: str
) -> dict[str, Any]:
    """Headers after one more failed attempt: count, reason, first and last failure time."""
    updated = clean_headers(headers)
    updated[ATTEMPTS] = attempts_of(headers) + 1
    updated.setdefault(FIRST_FAILURE, now)
    updated[LAST_FAILURE] = now
    updated[REASON] = reason
    if error is None:
        updated.pop(ERROR, None)
    else:
        updated[ERROR] = error
    return updated


def replay_headers(headers: Mapping[str, Any], replays: int) -> dict[str, Any]:
    """A dead letter's headers for a fresh start on the work path: no broker history, attempts
    counted anew, one more replay."""
    updated = clean_headers(headers)
    updated.pop(ATTEMPTS, None)
    updated[REPLAYS] = replays + 1
    return updated
