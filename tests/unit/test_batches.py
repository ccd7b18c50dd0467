"""Batches of shares without services: decoding them share by share, sizing worker batches by
shares, and what the DLQ tools tell of a batch."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any

import msgpack

from sharevault.crypto import Identity, Keyring
from sharevault.messages import (
    BATCH_CONTENT_TYPE,
    JSON_BATCH_CONTENT_TYPE,
    JSON_SINGLE_CONTENT_TYPE,
    SHARES_HEADER,
    SINGLE_CONTENT_TYPE,
    ShareMessage,
    encode_batch,
    shares_in,
)
from sharevault.ops.dlq import DeadLetter, Selection
from sharevault.worker.decode import Flaw, open_body
from sharevault.worker.inbox import Inbox
from tests.support.sharing import legacy_seal

KEYRING = Keyring([("ka", b"k" * 32)])
FOREIGN = Keyring([("kz", b"z" * 32)])


def message(
    client: str, keyring: Keyring = KEYRING, context: dict[str, str] | None = None
) -> ShareMessage:
    identity = Identity("custodian", client, "GDRIVE", "")
    return ShareMessage.build(
        message_id=f"m-{client}",
        version=1,
        identity=identity,
        sealed=keyring.seal(b"share of " + client.encode(), identity, 1, f"m-{client}"),
        context=context,
    )


def test_a_batch_opens_share_by_share_and_sets_apart_only_the_bad_ones() -> None:
    body = encode_batch(
        [
            message("a", context={"x-request-id": "req-a"}).encode(),
            message("b", FOREIGN).encode(),
            msgpack.packb({"message_id": "m-c", "version": -1}),
            message("d").encode(),
        ]
    )
    contents = open_body(
        body, KEYRING, content_type=BATCH_CONTENT_TYPE, message_id="batch", headers={}
    )
    assert contents.batch
    assert [s.row.message_id for s in contents.shares] == ["m-a", "m-d"]
    assert contents.shares[0].row.request_id == "req-a"
    assert contents.shares[0].row.sealed == contents.shares[0].message.sealed
    flawed = {f.message_id: f for f in contents.unstorable}
    assert (flawed["m-b"].flaw, flawed["m-c"].flaw) == (Flaw.UNDECRYPTABLE, Flaw.INVALID)
    assert not flawed["m-b"].whole
    # A set-apart share is a message of its own, readable alone.
    assert {f.content_type for f in contents.unstorable} == {SINGLE_CONTENT_TYPE}
    assert ShareMessage.model_validate(msgpack.unpackb(flawed["m-b"].body)).message_id == "m-b"
    assert msgpack.unpackb(flawed["m-c"].body) == {"message_id": "m-c", "version": -1}


def test_shares_sealed_for_another_message_or_from_the_future_are_set_apart_as_tampered() -> None:
    good, replayed, future = message("a"), message("b"), message("c")
    strict = Keyring([("ka", b"k" * 32)], accept_legacy=False)
    legacy = legacy_seal("ka", b"k" * 32, b"share", good.identity)
    body = encode_batch(
        [
            good.encode(),
            replayed.model_copy(update={"message_id": "m-b2", "version": 2}).encode(),
            future.model_copy(update={"version": 2**62}).encode(),
            good.model_copy(update={"message_id": "m-old", "sealed": legacy}).encode(),
        ]
    )
    lenient = open_body(body, KEYRING, content_type=BATCH_CONTENT_TYPE, latest=10**16)
    assert [s.row.message_id for s in lenient.shares] == ["m-a", "m-old"]
    assert {f.message_id: f.flaw for f in lenient.unstorable} == {
        "m-b2": Flaw.TAMPERED,
        "m-c": Flaw.TAMPERED,
    }
    refusing = open_body(body, strict, content_type=BATCH_CONTENT_TYPE, latest=10**16)
    assert [s.row.message_id for s in refusing.shares] == ["m-a"]
    assert {f.message_id for f in refusing.unstorable} == {"m-b2", "m-c", "m-old"}
    assert {f.flaw for f in refusing.unstorable} == {Flaw.TAMPERED}
    # Without a bound on versions (no clock to compare with) only the seal decides.
    unbounded = open_body(future.encode(), KEYRING, content_type=SINGLE_CONTENT_TYPE)
    assert [s.row.version for s in unbounded.shares] == [1]


def test_the_wire_carries_sealed_bytes_without_base64() -> None:
    one, two = message("a"), message("b")
    assert one.sealed in one.encode()  # the bytes as they are: a third fewer than base64
    assert msgpack.unpackb(one.encode())["sealed"] == one.sealed
    batch = msgpack.unpackb(encode_batch([one.encode(), two.encode()]))
    assert [ShareMessage.model_validate(s) for s in batch["shares"]] == [one, two]


def test_messages_of_an_earlier_version_in_json_still_open() -> None:
    old = [message(c) for c in ("a", "b")]
    legacy = [m.model_dump_json(exclude_none=True).encode() for m in old]
    single = open_body(legacy[0], KEYRING, content_type=JSON_SINGLE_CONTENT_TYPE)
    assert [(s.row.message_id, s.row.sealed) for s in single.shares] == [("m-a", old[0].sealed)]
    body = b'{"shares":[' + b",".join([*legacy, b'{"message_id":"m-x"}']) + b"]}"
    batch = open_body(body, KEYRING, content_type=JSON_BATCH_CONTENT_TYPE, message_id="old")
    assert [s.row.message_id for s in batch.shares] == ["m-a", "m-b"]
    [bad] = batch.unstorable
    # Set apart in the format it came in, under the content type that says so.
    assert (bad.message_id, bad.content_type) == ("m-x", JSON_SINGLE_CONTENT_TYPE)
    assert json.loads(bad.body) == {"message_id": "m-x"}
    letter = DeadLetter.of("old", body, {}, JSON_BATCH_CONTENT_TYPE)
    assert letter.clients == ("a", "b")


def test_a_broken_batch_or_message_is_set_apart_whole() -> None:
    kinds = (BATCH_CONTENT_TYPE, SINGLE_CONTENT_TYPE, JSON_BATCH_CONTENT_TYPE, "application/json")
    for content_type in kinds:
        contents = open_body(b"{not json", KEYRING, content_type=content_type, message_id="x")
        assert contents.shares == []
        assert [(f.message_id, f.flaw, f.whole, f.content_type) for f in contents.unstorable] == [
            ("x", Flaw.INVALID, True, content_type)
        ]
    not_a_map = open_body(msgpack.packb(7), KEYRING, content_type=BATCH_CONTENT_TYPE)
    assert [f.flaw for f in not_a_map.unstorable] == [Flaw.INVALID]
    single = open_body(
        message("e").encode(),
        KEYRING,
        content_type=SINGLE_CONTENT_TYPE,
        headers={"x-request-id": b"req-e"},
    )
    assert not single.batch
    assert [(s.row.message_id, s.row.request_id) for s in single.shares] == [("m-e", "req-e")]


@dataclass
class FakeDelivery:
    name: str
    headers: dict[str, Any] = field(default_factory=dict)


async def test_the_inbox_sizes_batches_in_shares() -> None:
    inbox = Inbox(lambda d: shares_in(d.headers))
    for name, shares in (("a", 3), ("b", 4), ("c", 1), ("d", 9)):
        inbox.put(FakeDelivery(name, {SHARES_HEADER: shares}), live=True)  # type: ignore[arg-type]
    stop = asyncio.Event()
    sizes = []
    while len(inbox):
        batch = await inbox.next_batch(stop, size=8, linger=0.01)
        sizes.append([d.name for d in batch])  # type: ignore[attr-defined]
    # Never over 8 shares, except a single delivery bigger than a batch: it goes alone.
    assert sizes == [["a", "b", "c"], ["d"]]
    assert shares_in({SHARES_HEADER: "7"}) == shares_in(None) == 1


async def test_a_delivery_arriving_while_the_inbox_lingers_is_weighed_too() -> None:
    inbox = Inbox(lambda d: shares_in(d.headers))
    inbox.put(FakeDelivery("a", {SHARES_HEADER: 6}), live=True)  # type: ignore[arg-type]

    async def later() -> None:
        await asyncio.sleep(0.01)
        inbox.put(FakeDelivery("big", {SHARES_HEADER: 5}), live=True)  # type: ignore[arg-type]

    task = asyncio.create_task(later())
    batch = await inbox.next_batch(asyncio.Event(), size=8, linger=0.5)
    await task
    assert [d.name for d in batch] == ["a"]  # type: ignore[attr-defined]
    assert len(inbox) == 1  # "big" starts the next batch


def test_a_dead_lettered_batch_is_listed_with_its_shares_and_clients() -> None:
    body = encode_batch([message("cl-1").encode(), message("cl-2").encode()])
    letter = DeadLetter.of(
        "batch-9", body, {"x-death": [{"reason": "delivery_limit"}]}, BATCH_CONTENT_TYPE
    )
    assert (letter.shares, letter.clients, letter.client_id) == (2, ("cl-1", "cl-2"), "cl-1")
    assert Selection(clients=frozenset({"cl-2"})).matches(letter)
    assert not Selection(clients=frozenset({"cl-3"})).matches(letter)
    shown = letter.as_json()
    assert "sealed" not in json.dumps(shown)
    assert base64.b64encode(b"share of cl-1").decode() not in json.dumps(shown)
