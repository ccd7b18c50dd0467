"""What `/healthz` and `/readyz` answer (published in the OpenAPI description)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Check = Literal["ok", "down"]


class HealthAnswer(BaseModel):
    """`GET /healthz`: the process answers."""

    status: Literal["ok"] = "ok"


class ReadyAnswer(BaseModel):
    """`GET /readyz`, 200 (ready) and 503 (unavailable) alike.

    Tolerant by design: a field added later is published as allowed.
    """

    model_config = ConfigDict(extra="allow")

    status: Literal["ready", "unavailable"]
    checks: dict[str, Check] = Field(
        description="Each dependency (broker, database, clock, …): ok or down",
        examples=[{"broker": "ok", "database": "ok", "clock": "ok"}],
    )
    nodes: dict[str, str | None] = Field(
        default_factory=dict,
        description="The node each link is on (host:port of a cluster member); null while down",
    )
    down: dict[str, str] | None = Field(
        default=None, description="Only when unavailable: what is wrong with each down dependency"
    )
    clock_offset_seconds: float | None = Field(
        default=None,
        description="This gateway's clock minus PostgreSQL's, as last measured (null: not yet);"
        " beyond MAX_CLOCK_SKEW the `clock` check is down (`clock_skew`) and writes answer 503",
    )
