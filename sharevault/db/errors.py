"""How the database fails: the error classes callers tell apart (down now, or bad input)."""

from __future__ import annotations

import asyncio

import asyncpg

# Errors that say "the database is not there right now", as opposed to "this input is wrong".
# asyncpg's InternalClientError too: a connection that dies under a statement can leave its
# protocol "cannot switch to state …"; and with several hosts, TargetServerAttributeNotMatched
# (one of its kind) says no read-write node answers, as during a failover. ConnectionDoesNotExist
# is a PostgresConnectionError.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
# Errors that say "this row can never be stored": parked at once instead of retried.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
)
# Any error the database answered with (the worker retries the rest with delays).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError,)

# What store_batch refuses a share for (sharevault_refuse raises check_violation naming it as the
# constraint): a refusal the gateway answers its waiting caller with (409), not a fault.
REFUSALS = frozenset({"methods_per_client"})


def refusal_of(exc: BaseException) -> str | None:
    """The bound a share was refused for (one of REFUSALS), or None for any other error."""
    if isinstance(exc, asyncpg.exceptions.CheckViolationError):
        name = getattr(exc, "constraint_name", None)
        if name in REFUSALS:
            return str(name)
    return None
