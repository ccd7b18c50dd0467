"""Field types shared by every edge model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StringConstraints

UNKNOWN_METHOD = "UNKNOWN"
# As large as the default MAX_BODY_BYTES (64 KiB): a share is typically 5-10 KB, and a body
# of that size is refused (413) before the schema is ever asked.
MAX_SHARE_CHARS = 64 * 1024
MAX_METHOD_CHARS = 64

# Printable ASCII without spaces: Portal ids are cuids.
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[!-~]+$")]
# Methods are words like GDRIVE-SECP256K1: letters, digits and a few separators, nothing a log
# line, a metric label or a shell would treat specially. Each distinct one is a row group per
# client, so it is short.
BackupMethod = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=MAX_METHOD_CHARS, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+\-]*$"
    ),
]
PairIdStr = Annotated[str, StringConstraints(max_length=255, pattern=r"^[!-~]*$")]


def _none_to(default: str, constrained: Any) -> Any:
    def convert(value: Any) -> Any:
        return default if value is None else value

    # The published schema says what senders may send: the string, or null.
    return BeforeValidator(convert, json_schema_input_type=constrained | None)


def _no_method(value: Any) -> Any:
    # PortalEx reads the method with `||`: "" is "no method", like null or an absent field.
    return UNKNOWN_METHOD if value is None or value == "" else value


# Legacy senders omit the method or send null or "": stored under UNKNOWN (our key for "no
# method", never reported to Portal as a method).
MethodOrUnknown = Annotated[
    BackupMethod,
    BeforeValidator(_no_method, json_schema_input_type=BackupMethod | Literal[""] | None),
]
# Legacy senders omit the pair id or send null: stored as '' (no pair).
PairId = Annotated[PairIdStr, _none_to("", PairIdStr)]
ShareText = Annotated[str, Field(min_length=1, max_length=MAX_SHARE_CHARS)]
