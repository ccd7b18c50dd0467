"""The OpenAPI 3.1 description, built from the same pydantic models that validate requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from sharevault import __version__
from sharevault.schemas import (
    AcceptedAnswer,
    ClientBackup,
    ClientBackupAnswer,
    ErrorBody,
    HealthAnswer,
    ReadyAnswer,
    WebhookBackup,
    WebhookFetch,
    WebhookFetchAnswer,
)
from sharevault.service import openapi_examples as ex

REF = "#/components/schemas/{model}"
ERRORS = {
    "400": "Body is not valid JSON",
    "401": "Missing or wrong credentials",
    "404": "No share matches",
    "408": "The body did not arrive within BODY_TIMEOUT of the headers; the connection closes",
    "403": "Caller not allowed (address allowlist, or another client's data)",
    "409": "A backup method new to the client beyond METHODS_PER_CLIENT (too_many_methods)",
    "413": "Body larger than MAX_BODY_BYTES",
    "415": "Content-Type is not application/json",
    "422": "Body or query breaks the schema",
    "429": "Too many requests for this client or caller; retry after Retry-After seconds",
    "500": "A stored share does not authenticate (undecryptable): it is never served, nor"
    " passed off as absent; operators are alerted",
    "503": "Broker or database unavailable, REQUEST_BUDGET spent, or the gateway at its"
    " MAX_CONNECTIONS / MAX_IN_FLIGHT (overloaded); retry after Retry-After",
}
# A write also meets a gateway whose clock is off: its versions would be untrustworthy.
WRITE_503 = (
    f"{ERRORS['503']}; or this gateway's clock is beyond MAX_CLOCK_SKEW of PostgreSQL's"
    " (clock_skew)"
)
# Answers that say when to come back.
RETRY_AFTER = ("429", "503")
TAGS = [
    {"name": "webhook", "description": "Portal's custodian webhooks (X-Webhook-Secret)"},
    {"name": "client", "description": "The wallet app's client backup share (Portal bearer)"},
    {"name": "health", "description": "Liveness and readiness probes"},
]
SERVERS = [{"url": "/", "description": "This gateway (in production behind the TLS proxy)"}]


@dataclass
class Operation:
    """One documented route: method, path, models, examples, security and every status."""

    method: str
    path: str
    summary: str
    operation_id: str
    tag: str
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    security: str | None = None
    errors: tuple[str, ...] = ()
    parameters: list[dict[str, Any]] = field(default_factory=list)
    # Descriptions that differ from ERRORS, by status.
    extra: dict[str, str] = field(default_factory=dict)
    # Named request examples ({"name": {"summary", "value"}}) and the 200 answer's example.
    request_examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    answer_example: dict[str, Any] | None = None
    # A status whose body is not ErrorBody: (model, example), e.g. /readyz's 503.
    special: dict[str, tuple[type[BaseModel], dict[str, Any]]] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        op: dict[str, Any] = {
            "operationId": self.operation_id,
            "tags": [self.tag],
            "summary": self.summary,
            "responses": {"200": _response("OK", self.answer, self.answer_example)},
        }
        if self.parameters:
            op["parameters"] = self.parameters
        if self.security:
            op["security"] = [{self.security: []}]
        if self.body is not None:
            media: dict[str, Any] = {"schema": _ref(self.body), "examples": self.request_examples}
            op["requestBody"] = {"required": True, "content": {"application/json": media}}
        for status in self.errors:
            description = self.extra.get(status, ERRORS[status])
            error = (ErrorBody, ex.error_example(status, self.security))
            model, example = self.special.get(status, error)
            # Only the JSON errors say when to come back (/readyz's 503 is a probe's answer).
            retry = status in RETRY_AFTER and model is ErrorBody
            op["responses"][status] = _response(description, model, example, retry_after=retry)
        return op

    def models(self) -> list[type[BaseModel]]:
        found = [m for m in (self.body, self.answer) if m is not None]
        return found + [model for model, _ in self.special.values()]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _response(
    description: str,
    model: type[BaseModel] | None,
    example: dict[str, Any] | None,
    *,
    retry_after: bool = False,
) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if model is not None:
        media: dict[str, Any] = {"schema": _ref(model)}
        if example is not None:
            media["example"] = example
        response["content"] = {"application/json": media}
    if retry_after:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before trying again",
                "schema": {"type": "string"},
            }
        }
    return response


def _components(models: list[type[BaseModel]]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(by_alias=True, ref_template=REF, mode="validation")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def webhook_operations(root: str) -> list[Operation]:
    write_errors = ("400", "401", "403", "408", "413", "415", "422", "429", "503")
    return [
        Operation(
            "post",
            f"{root}/backup",
            "Store a custodian backup share (Portal webhook)",
            "storeCustodianShare",
            "webhook",
            body=WebhookBackup,
            answer=AcceptedAnswer,
            security="webhookSecret",
            errors=(*write_errors, "409"),
            extra={"503": WRITE_503},
            request_examples={"gdrive": {"value": ex.WEBHOOK_BACKUP}},
            answer_example=ex.ACCEPTED,
        ),
        Operation(
            "post",
            f"{root}/backup/fetch",
            "Every stored custodian share of a client (Portal webhook)",
            "fetchCustodianShares",
            "webhook",
            body=WebhookFetch,
            answer=WebhookFetchAnswer,
            security="webhookSecret",
            errors=(*write_errors, "500"),
            request_examples={"fetch": {"value": ex.WEBHOOK_FETCH}},
            answer_example=ex.FETCH_ANSWER,
        ),
    ]


def client_operations(root: str) -> list[Operation]:
    path = f"{root}/clients/{{clientId}}/backup"
    client_id = {
        "name": "clientId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
        "example": ex.CLIENT_ID,
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
            "storeClientShare",
            "client",
            body=ClientBackup,
            answer=AcceptedAnswer,
            security="portalBearer",
            errors=("400", "401", "403", "408", "409", "413", "415", "422", "429", "503"),
            extra={"503": WRITE_503},
            parameters=[client_id],
            request_examples=ex.CLIENT_BACKUPS,
            answer_example=ex.ACCEPTED,
        ),
        Operation(
            "get",
            path,
            "The caller's client backup share, for recovery",
            "getClientShare",
            "client",
            answer=ClientBackupAnswer,
            security="portalBearer",
            errors=("401", "403", "404", "422", "429", "500", "503"),
            parameters=[client_id, *query],
            extra={"422": "A query parameter breaks the schema"},
            answer_example=ex.CLIENT_ANSWER,
        ),
    ]


def health_operations() -> list[Operation]:
    return [
        Operation(
            "get",
            "/healthz",
            "The process answers",
            "healthz",
            "health",
            answer=HealthAnswer,
            answer_example=ex.HEALTH,
        ),
        Operation(
            "get",
            "/readyz",
            "Broker and database reachable, clock within MAX_CLOCK_SKEW of PostgreSQL's",
            "readyz",
            "health",
            answer=ReadyAnswer,
            answer_example=ex.READY,
            errors=("503",),
            extra={"503": "A dependency is down: `checks` says which, `down` what is wrong"},
            special={"503": (ReadyAnswer, ex.UNAVAILABLE)},
        ),
    ]


OPERATIONS = web.AppKey("openapi_operations", list[Operation])


def build_spec(operations: list[Operation]) -> dict[str, Any]:
    """A whole OpenAPI 3.1 document for these operations."""
    paths: dict[str, Any] = {}
    models: list[type[BaseModel]] = [ErrorBody]
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = op.spec()
        models += [m for m in op.models() if m not in models]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sharevault",
            "version": __version__,
            "description": "Custodian backend for Portal MPC wallet backup shares.",
        },
        "servers": SERVERS,
        "tags": TAGS,
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


def all_operations(webhook_root: str, client_root: str) -> list[Operation]:
    """Every documented route of a gateway with these roots."""
    return health_operations() + webhook_operations(webhook_root) + client_operations(client_root)


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_spec(request.app[OPERATIONS]))


def add_routes(app: web.Application, operations: list[Operation]) -> None:
    app[OPERATIONS] = operations
    app.router.add_get("/openapi.json", openapi_json)
