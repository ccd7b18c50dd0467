"""The answer of an accepted write, built without pydantic, is the contract's AcceptedAnswer."""

from __future__ import annotations

import json
import os
from typing import Literal

import pytest

from sharevault.schemas import AcceptedAnswer
from sharevault.service.bodies import JSON_TYPE, Accepted, json_answer


@pytest.mark.parametrize("status", ["committed", "queued"])
def test_accepted_is_byte_for_byte_what_pydantic_wrote(
    status: Literal["committed", "queued"],
) -> None:
    message_id = os.urandom(16).hex()
    expected = AcceptedAnswer(messageId=message_id, status=status)
    body = Accepted(message_id, status).json_bytes()
    assert body == expected.model_dump_json(by_alias=True).encode()
    assert AcceptedAnswer.model_validate_json(body) == expected
    assert json.loads(body) == {"messageId": message_id, "status": status}


@pytest.mark.parametrize(
    "answer", [Accepted("0" * 32, "queued"), AcceptedAnswer(messageId="0" * 32, status="queued")]
)
def test_json_answer_has_the_same_body_and_type_either_way(
    answer: Accepted | AcceptedAnswer,
) -> None:
    response = json_answer(answer)
    assert response.status == 200
    assert response.headers["Content-Type"] == JSON_TYPE
    assert response.body == b'{"messageId":"00000000000000000000000000000000","status":"queued"}'
