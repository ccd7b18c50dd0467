"""Which database node a connection is on (/readyz names it; a multi-host DSN finds the primary)."""

from __future__ import annotations


def node_of(conn: object) -> str | None:
    """host:port (or the socket path) of the server a connection, or pooled one, is on."""
    # asyncpg keeps the address it connected to (of a host list, the one it chose) in `_addr`
    # and offers no public accessor; a pool's proxy passes the attribute through.
    addr = getattr(conn, "_addr", None)
    if isinstance(addr, tuple) and len(addr) == 2:
        return f"{addr[0]}:{addr[1]}"
    return addr if isinstance(addr, str) else None
