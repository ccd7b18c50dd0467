"""The OpenAPI description, built offline: valid, complete, and its examples fit its schemas."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from sharevault.schemas import ReadyAnswer
from sharevault.service.openapi import all_operations, build_spec

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return build_spec(all_operations("/webhook", "/portal"))


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def fits(spec: dict[str, Any], schema: dict[str, Any], value: object) -> list[str]:
    """Errors of `value` against `schema`, its $refs resolved in the document's components."""
    validator = Draft202012Validator({**schema, "components": spec["components"]})
    return [e.message for e in validator.iter_errors(value)]


def test_the_document_is_valid_openapi_31(spec: dict[str, Any]) -> None:
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    assert spec["servers"] and spec["servers"][0]["url"] == "/"
    assert {t["name"] for t in spec["tags"]} == {"webhook", "client", "health"}


def test_every_operation_has_an_id_tags_and_examples(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids)) == 6
    for path, method, op in operations(spec):
        assert op["tags"] and set(op["tags"]) <= {t["name"] for t in spec["tags"]}, path
        for status, response in op["responses"].items():
            media = response.get("content", {}).get("application/json")
            assert media is None or "example" in media, (path, method, status)
        if method == "post":
            assert op["requestBody"]["content"]["application/json"]["examples"], path


def test_every_example_fits_its_schema(spec: dict[str, Any]) -> None:
    checked = 0
    for path, _, op in operations(spec):
        if "requestBody" in op:
            media = op["requestBody"]["content"]["application/json"]
            for name, example in media["examples"].items():
                assert fits(spec, media["schema"], example["value"]) == [], (path, name)
                checked += 1
        for status, response in op["responses"].items():
            media = response.get("content", {}).get("application/json")
            if media is not None:
                assert fits(spec, media["schema"], media["example"]) == [], (path, status)
                checked += 1
    assert checked > 30


def test_writes_document_413_and_429_with_retry_after(spec: dict[str, Any]) -> None:
    for path, method, op in operations(spec):
        if method != "post":
            continue
        assert {"200", "400", "401", "413", "415", "422", "429", "503"} <= set(op["responses"])
        for status in ("429", "503"):
            assert "Retry-After" in op["responses"][status]["headers"], (path, status)


def test_closed_value_sets_are_enums(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas["AcceptedAnswer"]["properties"]["status"]["enum"] == ["committed", "queued"]
    assert schemas["ReadyAnswer"]["properties"]["status"]["enum"] == ["ready", "unavailable"]
    # A made-up status is refused by the published schema.
    assert fits(
        spec, {"$ref": "#/components/schemas/AcceptedAnswer"}, {"messageId": "m", "status": "lost"}
    )


def test_readyz_documents_its_own_body_for_503(spec: dict[str, Any]) -> None:
    unavailable = spec["paths"]["/readyz"]["get"]["responses"]["503"]
    assert "headers" not in unavailable  # a probe's answer: no Retry-After
    schema = unavailable["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ReadyAnswer"}
    # Fields other helpers add later (a clock check) stay valid: the model is open.
    later = {**unavailable["content"]["application/json"]["example"], "clock": {"skew": 0.1}}
    assert fits(spec, schema, later) == []
    assert ReadyAnswer.model_validate(later).status == "unavailable"
