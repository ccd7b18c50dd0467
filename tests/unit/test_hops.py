"""The hop trace (sharevault/hops.py): stamps per share by message id, nothing else."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from sharevault import hops


async def test_a_request_leaves_one_line_of_ordered_stamps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hops, "DIRECTORY", str(tmp_path))
    monkeypatch.setattr(hops, "_traces", {})

    async def handler(_request: web.Request) -> web.StreamResponse:
        for message_id in (None, None, None, "m-1"):  # accept, sealed, confirmed, seen
            hops.mark(message_id)
        return web.json_response({"status": "committed"})

    async def refused(_request: web.Request) -> web.StreamResponse:
        hops.mark()  # an answer before any share was accepted leaves no line
        return web.json_response({}, status=422)

    await hops.middleware(make_mocked_request("POST", "/webhook/backup"), handler)
    await hops.middleware(make_mocked_request("POST", "/webhook/backup"), refused)
    hops._traces["gateway"].flush()
    [line] = next(tmp_path.glob("gateway-*.tsv")).read_text().splitlines()
    message_id, *stamps = line.split("\t")
    assert message_id == "m-1"
    values = [float(s) for s in stamps]
    assert len(values) == 6 and values == sorted(values)
    assert abs(values[0] - time.time()) < 60


def test_the_worker_stamps_each_share_of_a_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hops, "DIRECTORY", str(tmp_path))
    monkeypatch.setattr(hops, "_traces", {})
    delivery = object()
    hops.delivered(delivery)
    hops.stored([("a", delivery), ("b", delivery)], time.perf_counter())
    hops._traces["worker"].flush()
    lines = next(tmp_path.glob("worker-*.tsv")).read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["a", "b"]
    for line in lines:
        delivered, began, committed = (float(s) for s in line.split("\t")[1:])
        assert delivered <= began <= committed
    assert not hops._delivered
