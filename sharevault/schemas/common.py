"""Field types shared by every edge model."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints

UNKNOWN_METHOD = "UNKNOWN"
MAX_SHARE_CHARS = 512 * 1024

# Printable ASCII without spaces: Portal ids are cuids, methods are words like GDRIVE-SECP256K1.
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[!-~]+$")]
BackupMethod = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[!-~]+$")]
PairIdStr = Annotated[str, StringConstraints(max_length=255, pattern=r"^[!-~]*$")]


def _none_to(default: str, constrained: Any) -> Any:
    def convert(value: Any) -> Any:
        return default if value is None else value

    # The published schema says what senders may send: the string, or null.
    return BeforeValidator(convert, json_schema_input_type=constrained | None)


# Legacy senders omit the method or send null: stored under UNKNOWN.
MethodOrUnknown = Annotated[BackupMethod, _none_to(UNKNOWN_METHOD, BackupMethod)]
# Legacy senders omit the pair id or send null: stored as '' (no pair).
PairId = Annotated[PairIdStr, _none_to("", PairIdStr)]
ShareText = Annotated[str, Field(min_length=1, max_length=MAX_SHARE_CHARS)]
