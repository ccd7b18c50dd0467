"""`sharevault stats`' figures: shares by kind and method, keys, outbox, queue depths, dead letters,
the journal; looked at only (passive declares), never created."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from sharevault.broker import Broker, BrokerUnavailable
from sharevault.config import Settings
from sharevault.crypto import Keyring
from sharevault.db import DATABASE_ERRORS, TRANSIENT_ERRORS, open_store
from sharevault.ops.times import show
from sharevault.wiring import broker_of

# How long to wait for the journal's first message: an empty stream delivers nothing at all.
JOURNAL_WAIT = 1.0


async def gather_stats(settings: Settings) -> dict[str, Any]:
    """Every figure; a part whose service is down is None, with the reason under "errors"."""
    data: dict[str, Any] = {
        "shares": None,
        "keys": None,
        "outbox": None,
        "queues": None,
        "dead_letters": None,
        "journal": None,
        "errors": {},
    }
    try:
        data.update(await _database_stats(settings))
    except TRANSIENT_ERRORS as exc:
        data["errors"]["database"] = f"unavailable ({type(exc).__name__})"
    except DATABASE_ERRORS as exc:
        # E.g. an empty database: the class name says which (never a value).
        data["errors"]["database"] = f"error ({type(exc).__name__}; migrated?)"
    try:
        data.update(await _broker_stats(settings))
    except BrokerUnavailable as exc:
        data["errors"]["broker"] = str(exc)
    return data


def current_key(settings: Settings) -> str | None:
    """The tag (key id column, `v2:<kid>`) new shares are sealed with; None where this host has
    no keyring."""
    if settings.encryption_keys is None:
        return None
    return Keyring(settings.keyring).current_tag


async def _database_stats(settings: Settings) -> dict[str, Any]:
    async with open_store(settings.database_url.get_secret_value(), size=1) as store:
        by_method = await store.share_counts()
        outbox = await store.outbox_summary()
        keys = await store.key_counts()
    by_kind: dict[str, int] = {}
    for kind, _, count in by_method:
        by_kind[kind] = by_kind.get(kind, 0) + count
    pending = outbox.get("pending")
    return {
        "shares": {
            "total": sum(by_kind.values()),
            "by_kind": by_kind,
            "by_method": [
                {"kind": kind, "backup_method": method, "count": count}
                for kind, method, count in by_method
            ],
        },
        "keys": {"current": current_key(settings), **keys},
        "outbox": {
            "by_status": {
                status: {"count": count, "oldest_seconds": round(oldest, 3)}
                for status, (count, oldest) in outbox.items()
            },
            "pending": pending[0] if pending else 0,
            "pending_oldest_seconds": round(pending[1], 3) if pending else None,
        },
    }


async def _broker_stats(settings: Settings) -> dict[str, Any]:
    # declare=False: a look never creates a queue (counts are passive declares).
    link = broker_of(settings, name="sharevault-stats", robust=False, declare=False)
    async with link as broker:
        topology = broker.topology
        roles = [(topology.shares, "live"), (topology.backlog, "backlog")]
        roles += [
            (topology.retry(level), f"retry {level} ({delay:g}s)")
            for level, delay in enumerate(settings.retry_delays)
        ]
        roles.append((topology.dead, "dead letters"))
        queues: list[dict[str, Any]] = []
        for name, role in roles:
            counts = await broker.admin.queue_counts(name)
            messages, consumers = counts if counts is not None else (None, None)
            queues.append(
                {"name": name, "role": role, "messages": messages, "consumers": consumers}
            )
        journal = await _journal(broker, settings)
    dead = next(q["messages"] for q in queues if q["name"] == topology.dead)
    return {"queues": queues, "dead_letters": dead, "journal": journal}


async def _journal(broker: Broker, settings: Settings) -> dict[str, Any]:
    """Retention settings, and the oldest message the stream still holds (its first offset)."""
    oldest: dict[str, Any] = {"oldest": None, "first_offset": None}
    offset: dict[str, Any] = {"x-stream-offset": "first"}
    first = None
    # Only a journal that exists is read (a look never creates one). Prefetch 1 and no ack:
    # nothing else is delivered; the stream forgets it at the close.
    if await broker.admin.queue_counts(broker.topology.journal) is not None:
        async with broker.reader(broker.topology.journal, prefetch=1, arguments=offset) as it:
            first = await it.next(JOURNAL_WAIT)
    if first is not None:
        oldest["oldest"] = show(first.timestamp) if first.timestamp else None
        position: Any = (first.headers or {}).get("x-stream-offset", 0)
        oldest["first_offset"] = int(position)
    return {
        "name": broker.topology.journal,
        "max_age": settings.journal_max_age,
        "max_bytes": settings.journal_max_bytes,
        **oldest,
    }


def render(data: dict[str, Any]) -> str:
    """The figures as tables, for a terminal."""
    parts: list[str] = []
    shares = data["shares"]
    if shares is not None:
        rows = [[m["kind"], m["backup_method"], m["count"]] for m in shares["by_method"]]
        rows.append(["all", "", shares["total"]])
        parts.append(tabulate(rows, headers=["shares", "backup method", "count"]))
    keys = data["keys"]
    if keys is not None:
        ids = sorted(set(keys["shares"]) | set(keys["outbox"]))
        rows = [
            [
                kid + (" (current)" if kid == keys["current"] else ""),
                keys["shares"].get(kid, 0),
                keys["outbox"].get(kid, 0),
            ]
            for kid in ids
        ]
        parts.append(tabulate(rows, headers=["key id", "shares", "outbox bearers"]))
    outbox = data["outbox"]
    if outbox is not None:
        rows = [
            [status, v["count"], _age(v["oldest_seconds"])]
            for status, v in outbox["by_status"].items()
        ]
        parts.append(tabulate(rows, headers=["outbox", "reports", "oldest"]))
    if data["queues"] is not None:
        rows = [
            [q["name"], q["role"], _maybe(q["messages"]), _maybe(q["consumers"])]
            for q in data["queues"]
        ]
        parts.append(tabulate(rows, headers=["queue", "role", "ready", "consumers"]))
    journal = data["journal"]
    if journal is not None:
        rows = [
            ["stream", journal["name"]],
            ["retention", f"{journal['max_age']} or {journal['max_bytes']:,} bytes"],
            ["oldest message", journal["oldest"] or "-"],
            ["first offset", _maybe(journal["first_offset"])],
        ]
        parts.append(tabulate(rows, headers=["journal", ""]))
    return "\n\n".join(parts)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _maybe(value: int | None) -> str:
    return "-" if value is None else str(value)
