"""Named queries from sql/queries.sql (`-- name: x` headers), parsed once at import."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries() -> dict[str, str]:
    """Named queries from sql/queries.sql, parsed once at import."""
    text = resources.files("sharevault").joinpath("sql/queries.sql").read_text()
    chunks = _NAME.split(text)[1:]
    return {name: body.strip() for name, body in zip(chunks[::2], chunks[1::2], strict=True)}


Q = load_queries()
