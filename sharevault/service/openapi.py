"""The OpenAPI 3.1 description, built from the same pydantic models that validate requests."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from sharevault.schemas import (
    AcceptedAnswer,
    ClientBackup,
    ClientBackupAnswer,
    ErrorBody,
    WebhookBackup,
    WebhookFetch,
    WebhookFetchAnswer,
)

REF = "#/components/schemas/{model}"
ERRORS = {
    "400": "Body is not valid JSON",
    "401": "Missing or wrong credentials",
    "404": "No share matches",
    "403": "Caller not allowed (address allowlist, or another client's data)",
    "409": "A backup method new to the client beyond METHODS_PER_CLIENT (too_many_methods)",
    "413": "Body too large",
    "415": "Content-Type is not application/json",
    "422": "Body breaks the schema",
    "503": "Broker or database unavailable; retry after Retry-After seconds",
}


class Operation:
    """One documented route: method, path, models, security and the errors it can answer."""

    def __init__(
        self,
        method: str,
        path: str,
        summary: str,
        *,
        body: type[BaseModel] | None = None,
        answer: type[BaseModel] | None = None,
        security: str | None = None,
        errors: tuple[str, ...] = (),
        parameters: list[dict[str, Any]] | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.method, self.path, self.summary = method, path, summary
        self.body, self.answer, self.security = body, answer, security
        self.errors, self.parameters, self.extra = errors, parameters or [], extra or {}

    def spec(self) -> dict[str, Any]:
        op: dict[str, Any] = {"summary": self.summary, "responses": {}}
        if self.parameters:
            op["parameters"] = self.parameters
        if self.security:
            op["security"] = [{self.security: []}]
        if self.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(self.body)}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if self.answer is not None:
            ok["content"] = {"application/json": {"schema": _ref(self.answer)}}
        op["responses"]["200"] = ok
        for status in self.errors:
            op["responses"][status] = _error(self.extra.get(status, ERRORS[status]), status)
        return op


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _error(description: str, status: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(ErrorBody)}},
    }
    if status == "503":
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return response


def _components(models: list[type[BaseModel]]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(by_alias=True, ref_template=REF, mode="validation")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def webhook_operations(root: str) -> list[Operation]:
    write_errors = ("400", "401", "403", "413", "415", "422", "503")
    return [
        Operation(
            "post",
            f"{root}/backup",
            "Store a custodian backup share (Portal webhook)",
            body=WebhookBackup,
            answer=AcceptedAnswer,
            security="webhookSecret",
            errors=(*write_errors, "409"),
        ),
        Operation(
            "post",
            f"{root}/backup/fetch",
            "Every stored custodian share of a client (Portal webhook)",
            body=WebhookFetch,
            answer=WebhookFetchAnswer,
            security="webhookSecret",
            errors=write_errors,
        ),
    ]


def client_operations(root: str) -> list[Operation]:
    path = f"{root}/clients/{{clientId}}/backup"
    client_id = {
        "name": "clientId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    }
    query = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in ("backupMethod", "backupSharePairId")
    ]
    return [
        Operation(
            "post",
            path,
            "Store the caller's client backup share (the wallet app calls this)",
            body=ClientBackup,
            answer=AcceptedAnswer,
            security="portalBearer",
            errors=("400", "401", "403", "409", "413", "415", "422", "503"),
            parameters=[client_id],
        ),
        Operation(
            "get",
            path,
            "The caller's client backup share, for recovery",
            answer=ClientBackupAnswer,
            security="portalBearer",
            errors=("401", "403", "404", "422", "503"),
            parameters=[client_id, *query],
        ),
    ]


def health_operations() -> list[Operation]:
    return [
        Operation("get", "/healthz", "The process answers"),
        Operation(
            "get",
            "/readyz",
            "Broker and database reachable",
            errors=("503",),
            extra={"503": "Broker or database down (the body says which)"},
        ),
    ]


OPERATIONS = web.AppKey("openapi_operations", list[Operation])


def build_spec(operations: list[Operation]) -> dict[str, Any]:
    """A whole OpenAPI 3.1 document for these operations."""
    paths: dict[str, Any] = {}
    models: list[type[BaseModel]] = [ErrorBody]
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = op.spec()
        models += [m for m in (op.body, op.answer) if m is not None and m not in models]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sharevault",
            "version": "1",
            "description": "Custodian backend for Portal MPC wallet backup shares.",
        },
        "paths": paths,
        "components": {
            "schemas": _components(models),
            "securitySchemes": {
                "webhookSecret": {"type": "apiKey", "in": "header", "name": "X-Webhook-Secret"},
                "portalBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Portal client API key or client session token",
                },
            },
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_spec(request.app[OPERATIONS]))


def add_routes(app: web.Application, operations: list[Operation]) -> None:
    app[OPERATIONS] = operations
    app.router.add_get("/openapi.json", openapi_json)
