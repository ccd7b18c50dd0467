"""Optional allowlist of caller networks (Portal's egress IPs), with X-Forwarded-For honoured only
when the direct peer is a configured trusted proxy."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from aiohttp import web

from sharevault.service.appkeys import SETTINGS
from sharevault.service.errors import ApiError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=4096)  # the same few peers and proxies, request after request
def _parse(raw: str | None) -> Address | None:
    try:
        return ipaddress.ip_address((raw or "").strip())
    except ValueError:
        return None


def _within(address: Address, networks: Sequence[Network]) -> bool:
    return any(address in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]
) -> Address | None:
    """The peer, or behind trusted proxies the right-most untrusted X-Forwarded-For hop."""
    address = _parse(peer)
    if address is None or not forwarded_for or not _within(address, trusted):
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop_address = _parse(hop)
        if hop_address is None:
            return None  # a garbled chain proves nothing
        if not _within(hop_address, trusted):
            return hop_address
    return address


def caller_address(request: web.Request) -> Address | None:
    """The caller, from every X-Forwarded-For line (a proxy may append a line of its own rather
    than extend the first: reading the first alone would trust what the caller wrote)."""
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
    return client_address(request.remote, forwarded, request.app[SETTINGS].trusted_proxies)


def require_allowed_ip(request: web.Request) -> None:
    """403 unless the caller's address is in SHAREVAULT_ALLOWED_IPS (when that is set)."""
    settings = request.app[SETTINGS]
    if not settings.allowed_ips:
        return
    address = caller_address(request)
    if address is None or not _within(address, settings.allowed_ips):
        raise ApiError(403, "forbidden_address", "this address may not call this endpoint")
