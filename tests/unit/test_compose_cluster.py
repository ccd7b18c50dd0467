"""deploy/compose.cluster.yaml: the clustered layout parses and wires every process to all nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from tests.unit.test_compose import compose_spec_schema

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.cluster.yaml"


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_three_rabbitmq_nodes_form_one_cluster() -> None:
    compose = load()
    nodes = [name for name in compose["services"] if name.startswith("rabbit-")]
    assert nodes == ["rabbit-1", "rabbit-2", "rabbit-3"]
    formation = compose["configs"]["rabbitmq-cluster"]["content"]
    for name in nodes:
        service = compose["services"][name]
        assert service["hostname"] == name
        assert "RABBITMQ_ERLANG_COOKIE" in service["environment"]
        assert f"rabbit@{name}" in formation


def test_every_process_reaches_every_node() -> None:
    compose = load()
    for name in ("gateway", "worker", "migrate"):
        env = compose["services"][name]["environment"]
        amqp = env["SHAREVAULT_AMQP_URL"].split(",")
        assert [url.split("@")[1].split(":")[0] for url in amqp] == [
            "rabbit-1",
            "rabbit-2",
            "rabbit-3",
        ]
        dsn = env["SHAREVAULT_DATABASE_URL"]
        assert "pg-primary:5432,pg-replica:5432" in dsn
        assert dsn.endswith("target_session_attrs=read-write")


def test_the_replica_streams_from_the_primary() -> None:
    replica = load()["services"]["pg-replica"]
    script = "\n".join(replica["entrypoint"])
    assert "pg_basebackup -h pg-primary" in script and " -R " in script


def test_it_follows_the_compose_specification() -> None:
    errors = list(Draft202012Validator(compose_spec_schema()).iter_errors(load()))
    assert not errors, [e.message for e in errors[:5]]
