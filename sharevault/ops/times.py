"""Times given on the command line: ISO 8601, or an age such as 90s, 15m, 2h, 3d (that long ago)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An aware UTC datetime; naive ISO times are taken as UTC. ValueError when unreadable."""
    text = text.strip()
    age = _AGE.match(text)
    if age:
        delta = timedelta(**{_UNITS[age[2]]: float(age[1])})
        return (now or datetime.now(UTC)) - delta
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time nor an age like 15m, 2h, 3d"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def to_micros(moment: datetime) -> int:
    """The unit of message versions (gateway receive time in µs)."""
    return int(moment.timestamp() * 1_000_000)


def from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def show(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds").replace("+00:00", "Z")
