"""A trigger that refuses chosen clients' rows, and the CLI read back as JSON, for the DLQ tests."""

from __future__ import annotations

import json
from typing import Any

from sharevault.config import Settings
from tests.support.leakcheck import sensitive
from tests.support.processes import outage_env, run_cli

SECRET_SHARE = "dlq-share-secret-never-printed"
sensitive(SECRET_SHARE)

POISON_TRIGGER = """
CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.client_id LIKE 'poison-%' THEN
    RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = 'P0001';
  END IF;
  IF NEW.client_id LIKE 'busy-%' THEN
    RAISE EXCEPTION 'conflict made by a test trigger' USING ERRCODE = '40001';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON shares FOR EACH ROW EXECUTE FUNCTION poison();
"""


async def cli_json(settings: Settings, *args: str) -> Any:
    code, out, err = await run_cli(*args, "--json", env=outage_env(settings))
    assert code == 0, err
    assert SECRET_SHARE not in out + err
    return json.loads(out)
