"""The dead-letter queue: list, show, replay and purge, one confirmed pass over the queue each."""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sharevault.broker import Broker, Delivery
from sharevault.messages import (
    ATTEMPTS,
    BACKLOG_KEY,
    DEAD_KEY,
    ERROR,
    FIRST_FAILURE,
    LAST_FAILURE,
    REASON,
    REPLAYS,
    Envelope,
    UndecodableError,
    decode_message,
    replay_headers,
)
from sharevault.ops.times import show

# How long to wait for the next of the messages counted at the start before calling it a change.
DELIVERY_WAIT = 10.0
CHUNK = 256


@dataclass(frozen=True)
class DeadLetter:
    """What the tools tell about one dead letter: its headers and identity, never the share."""

    message_id: str
    reason: str
    error: str | None
    attempts: int
    first_failure: datetime | None
    last_failure: datetime | None
    replays: int
    client_id: str | None
    kind: str | None
    backup_method: str | None
    pair_id: str | None
    version: int | None
    size: int
    # A batch the broker dead-lettered whole (delivery limit) carries several shares: the
    # identity fields are its first share's, `clients` every client it holds.
    shares: int = 1
    clients: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        message_id: str,
        body: bytes,
        headers: Mapping[str, Any],
        content_type: str | None,
    ) -> DeadLetter:
        reason, error = str(headers.get(REASON) or "unknown"), headers.get(ERROR)
        first, last = _time(headers.get(FIRST_FAILURE)), _time(headers.get(LAST_FAILURE))
        deaths = headers.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            # The last hop was the broker's (the worker strips x-death when it publishes):
            # e.g. a message that kept crashing workers, moved on by x-delivery-limit.
            latest = deaths[0]
            reason = str(latest.get("reason", "unknown"))
            error = f"broker dead-lettered it from {latest.get('queue')}"
            last = _time(latest.get("time")) or last
            first = first or _time(deaths[-1].get("time"))
        shares = _shares(body, content_type)
        identity = shares[0] if shares else {}
        clients = tuple(dict.fromkeys(str(s["client_id"]) for s in shares if "client_id" in s))
        return cls(
            message_id=message_id,
            reason=reason,
            error=None if error is None else str(error),
            attempts=_int(headers.get(ATTEMPTS)),
            first_failure=first,
            last_failure=last,
            replays=_int(headers.get(REPLAYS)),
            client_id=identity.get("client_id"),
            kind=identity.get("kind"),
            backup_method=identity.get("backup_method"),
            pair_id=identity.get("pair_id"),
            version=_int(identity.get("version")) if "version" in identity else None,
            size=len(body),
            shares=max(len(shares), 1),
            clients=clients,
        )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["first_failure"] = show(self.first_failure)
        data["last_failure"] = show(self.last_failure)
        return data


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _shares(body: bytes, content_type: str | None) -> list[dict[str, Any]]:
    """The identity fields of each share of a queue message (one, or a batch), read leniently:
    a dead letter may be garbage."""
    try:
        data = decode_message(body, content_type)
    except UndecodableError:
        return []
    if isinstance(data, dict) and isinstance(data.get("shares"), list):
        return [_identity(item) for item in data["shares"]]
    return [_identity(data)]


def _identity(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        return {}
    keys = ("client_id", "kind", "backup_method", "pair_id", "version")
    return {k: data[k] for k in keys if isinstance(data.get(k), str | int)}


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on; empty fields match everything."""

    clients: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    message_ids: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.clients and self.clients.isdisjoint(letter.clients):
            return False
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.message_ids and letter.message_id not in self.message_ids:
            return False
        when = letter.last_failure
        if self.since is not None and (when is None or when < self.since):
            return False
        return not (self.until is not None and (when is None or when > self.until))


class Action(enum.Enum):
    KEEP = "keep"
    REPLAY = "replay"
    DROP = "drop"


@dataclass
class Sweep:
    """What one pass saw and did."""

    total: int = 0
    seen: int = 0
    matched: list[DeadLetter] = field(default_factory=list)
    # Every message seen, selected or not.
    by_reason: Counter[str] = field(default_factory=Counter)
    done: Counter[Action] = field(default_factory=Counter)
    complete: bool = True


async def sweep(
    broker: Broker,
    selection: Selection,
    action: Action,
    *,
    timeout: float,
    on_progress: Callable[[int], None] | None = None,
) -> Sweep:
    """Take every message that was in the DLQ at the start exactly once and, for each one, keep
    it (re-published to the tail), replay it (to the backlog) or drop it — acking it only after
    the broker confirmed where it went, so a crash at any point loses nothing."""
    topology = broker.topology
    await broker.admin.hold_lock(topology.dlq_lock)
    result = Sweep(total=await broker.admin.queue_depth(topology.dead))
    if result.total == 0:
        return result
    async with broker.reader(topology.dead, prefetch=min(result.total, CHUNK)) as deliveries:
        while result.seen < result.total:
            chunk: list[Delivery] = []
            while len(chunk) < min(CHUNK, result.total - result.seen):
                delivery = await deliveries.next(DELIVERY_WAIT)
                if delivery is None:
                    break
                chunk.append(delivery)
            if not chunk:
                result.complete = False  # someone else took messages meanwhile
                break
            await asyncio.gather(
                *(_settle(broker, d, selection, action, result, timeout) for d in chunk)
            )
            await deliveries.ack_through(chunk[-1])
            result.seen += len(chunk)
            if on_progress is not None:
                on_progress(len(chunk))
    return result


async def _settle(
    broker: Broker,
    delivery: Delivery,
    selection: Selection,
    action: Action,
    result: Sweep,
    timeout: float,
) -> None:
    """Publish the delivery where it goes (with confirm); the caller acks once all are out."""
    headers = dict(delivery.headers or {})
    letter = DeadLetter.of(delivery.message_id or "", delivery.body, headers, delivery.content_type)
    result.by_reason[letter.reason] += 1
    chosen = Action.KEEP
    if selection.matches(letter):
        result.matched.append(letter)
        chosen = action
    result.done[chosen] += 1
    if chosen is Action.DROP:
        return
    if chosen is Action.REPLAY:
        headers = replay_headers(headers, letter.replays)
        key = BACKLOG_KEY
    else:
        headers.pop("x-delivery-count", None)
        key = DEAD_KEY
    envelope = Envelope(delivery.body, delivery.message_id or "", headers, delivery.content_type)
    await broker.publisher.publish(
        envelope, routing_key=key, exchange=broker.topology.recover, timeout=timeout
    )
