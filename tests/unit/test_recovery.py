"""Outage recovery without services: headers, the two-lane inbox, selections, topology arguments."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import pytest

from sharevault.broker.topology import QueueOptions, Topology, _bindings, _queue_arguments
from sharevault.config import ConfigError, load_settings
from sharevault.crypto import Identity
from sharevault.db import SealedRow
from sharevault.messages import (
    ATTEMPTS,
    ERROR,
    FIRST_FAILURE,
    LAST_FAILURE,
    REASON,
    SINGLE_CONTENT_TYPE,
    attempts_of,
    deliveries_of,
    failure_headers,
)
from sharevault.ops.dlq import DeadLetter, Selection
from sharevault.ops.replay import ReplayRange
from sharevault.ops.times import parse_time, to_micros
from sharevault.wiring import queue_options
from sharevault.worker.inbox import DeliveryCounter, Inbox

KEYS = "ka:" + base64.b64encode(b"k" * 32).decode()


def settings(**overrides: object) -> Any:
    return load_settings(webhook_secret="s" * 20, encryption_keys=KEYS, **overrides)


def test_each_failure_counts_an_attempt_and_keeps_the_first_time() -> None:
    broker_added = {"x-death": [{"reason": "expired"}], "x-delivery-count": 3, "own": "kept"}
    first = failure_headers(broker_added, "database_error", "RaiseError", "T1")
    assert first == {
        "own": "kept",
        ATTEMPTS: 1,
        FIRST_FAILURE: "T1",
        LAST_FAILURE: "T1",
        REASON: "database_error",
        ERROR: "RaiseError",
    }
    second = failure_headers(first, "undecryptable", None, "T2")
    assert (second[ATTEMPTS], second[FIRST_FAILURE], second[LAST_FAILURE]) == (2, "T1", "T2")
    assert ERROR not in second
    assert attempts_of({ATTEMPTS: "junk"}) == 0
    assert deliveries_of({"x-delivery-count": 2}) == 3
    assert deliveries_of(None) == 1


class FakeDelivery:
    def __init__(self, name: str) -> None:
        self.name = name


async def test_the_inbox_hands_out_live_deliveries_before_the_backlog() -> None:
    inbox = Inbox()
    for n in range(3):
        inbox.put(FakeDelivery(f"b{n}"), live=False)  # type: ignore[arg-type]
    for n in range(2):
        inbox.put(FakeDelivery(f"l{n}"), live=True)  # type: ignore[arg-type]
    stop = asyncio.Event()
    batch = await inbox.next_batch(stop, size=3, linger=0.01)
    assert [d.name for d in batch] == ["l0", "l1", "b0"]  # type: ignore[attr-defined]
    assert len(inbox) == 2
    inbox.clear()
    stop.set()
    assert await inbox.next_batch(stop, size=3, linger=0.01) == []


async def test_the_inbox_lingers_for_more_then_stops_at_the_batch_size() -> None:
    inbox = Inbox()
    stop = asyncio.Event()
    inbox.put(FakeDelivery("first"), live=True)  # type: ignore[arg-type]

    async def later() -> None:
        await asyncio.sleep(0.01)
        for n in range(5):
            inbox.put(FakeDelivery(f"late{n}"), live=False)  # type: ignore[arg-type]

    task = asyncio.create_task(later())
    batch = await inbox.next_batch(stop, size=4, linger=0.5)
    await task
    assert [d.name for d in batch] == ["first", "late0", "late1", "late2"]  # type: ignore[attr-defined]


def test_the_delivery_counter_forgets_the_oldest_ids() -> None:
    counter = DeliveryCounter(capacity=2)
    assert [counter.count("a"), counter.count("a"), counter.count("b")] == [1, 2, 1]
    counter.count("c")  # pushes "a" out
    assert counter.count("a") == 1
    assert counter.count(None) == 1


def test_times_on_the_command_line() -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_time("2h", now=now) == now - timedelta(hours=2)
    assert parse_time("90s", now=now) == now - timedelta(seconds=90)
    assert parse_time("2030-01-01T00:00:00Z") == datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_time("2030-01-01 01:00") == datetime(2030, 1, 1, 1, tzinfo=UTC)
    assert parse_time("2030-01-01T02:00:00+02:00") == datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither"):
        parse_time("yesterday")


def test_a_dead_letter_tells_its_story_without_the_share() -> None:
    body = msgpack.packb({"client_id": "cl-1", "kind": "custodian", "version": 7, "sealed": b"s"})
    worker_parked = DeadLetter.of(
        "m1",
        body,
        {REASON: "undecryptable", ATTEMPTS: 1, FIRST_FAILURE: "2030-01-01T00:00:00+00:00"},
        SINGLE_CONTENT_TYPE,
    )
    assert (worker_parked.reason, worker_parked.client_id, worker_parked.version) == (
        "undecryptable",
        "cl-1",
        7,
    )
    assert "sealed" not in worker_parked.as_json()
    when = datetime(2030, 1, 2, tzinfo=UTC)
    broker_parked = DeadLetter.of(
        "m2",
        b"not json",
        {
            REASON: "database_error",
            "x-death": [{"reason": "delivery_limit", "queue": "p.backlog", "time": when}],
        },
        SINGLE_CONTENT_TYPE,
    )
    assert (broker_parked.reason, broker_parked.last_failure) == ("delivery_limit", when)
    assert broker_parked.client_id is None
    assert "p.backlog" in str(broker_parked.error)


def test_selections_match_on_every_given_field() -> None:
    letter = DeadLetter.of(
        "m1",
        json.dumps({"client_id": "cl-1"}).encode(),  # as an earlier version published
        {REASON: "undecryptable", LAST_FAILURE: "2030-01-01T00:00:00+00:00"},
        "application/json",
    )
    noon = datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert Selection().matches(letter)
    assert Selection(clients=frozenset({"cl-1"}), reasons=frozenset({"undecryptable"})).matches(
        letter
    )
    assert not Selection(clients=frozenset({"cl-2"})).matches(letter)
    assert not Selection(reasons=frozenset({"invalid_message"})).matches(letter)
    assert not Selection(since=noon).matches(letter)
    assert Selection(until=noon).matches(letter)
    assert not Selection(message_ids=frozenset({"other"})).matches(letter)


def test_a_replay_range_selects_by_version_and_client() -> None:
    since = datetime(2030, 1, 1, tzinfo=UTC)
    row = SealedRow(Identity("custodian", "cl-1", "GDRIVE", ""), b"x", to_micros(since) + 1, "m")
    assert ReplayRange(since).selects(row)
    assert not ReplayRange(since + timedelta(seconds=1)).selects(row)
    assert not ReplayRange(since, until=since).selects(row)
    assert not ReplayRange(since, client="cl-2").selects(row)


def test_settings_of_outage_recovery() -> None:
    parsed = settings(retry_delays="0.5, 5,60")
    assert parsed.retry_delays == (0.5, 5.0, 60.0)
    options = queue_options(settings(live_ttl=0.25, delivery_limit=3))
    assert (options.live_ttl_ms, options.delivery_limit, options.retry_levels) == (250, 3, 4)
    with pytest.raises(ConfigError, match="SHAREVAULT_RETRY_DELAYS"):
        settings(retry_delays=",".join(["1"] * 9))
    with pytest.raises(ConfigError, match="SHAREVAULT_JOURNAL_MAX_AGE"):
        settings(journal_max_age="7 days")


def test_topology_moves_messages_at_least_once_and_never_through_the_live_queue() -> None:
    topology = Topology("p")
    arguments = _queue_arguments(topology, QueueOptions(retry_levels=2))
    live = arguments["p.shares"]
    assert live["x-message-ttl"] == 1000
    assert (live["x-dead-letter-exchange"], live["x-dead-letter-routing-key"]) == (
        "p.recover",
        "backlog",
    )
    for name in ("p.shares", "p.backlog", "p.retry.0", "p.retry.1"):
        assert arguments[name]["x-dead-letter-strategy"] == "at-least-once"
        assert arguments[name]["x-overflow"] == "reject-publish"
    assert arguments["p.backlog"]["x-dead-letter-routing-key"] == "dead"
    assert arguments["p.journal"]["x-queue-type"] == "stream"
    assert "p.retry.2" not in arguments
    bound = _bindings(topology, 2)
    # Only the gateway's publish reaches the live queue (and the journal, with the same confirm).
    assert [(q, e) for q, e, _ in bound if q == "p.shares"] == [("p.shares", "p.ingest")]
    assert ("p.journal", "p.ingest", "share") in bound
    assert set(topology.queues) >= set(arguments) | {"p.dead.lock", "p.retry.7"}
