from __future__ import annotations

import ipaddress

import pytest

from sharevault.service.ipfilter import client_address

PROXY = [ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    "peer, xff, expected",
    [
        ("35.203.150.117", None, "35.203.150.117"),
        # An untrusted peer cannot claim another address.
        ("198.51.100.7", "35.203.150.117", "198.51.100.7"),
        # Behind our proxy: the right-most hop the proxy saw.
        ("10.1.2.3", "35.203.150.117", "35.203.150.117"),
        ("10.1.2.3", "6.6.6.6, 35.203.150.117", "35.203.150.117"),
        ("10.1.2.3", "35.203.150.117, 10.9.9.9", "35.203.150.117"),
        ("10.1.2.3", "10.9.9.9", "10.1.2.3"),
        ("10.1.2.3", "not-an-ip", None),
        ("::1", None, "::1"),
        (None, None, None),
    ],
)
def test_client_address(peer: str | None, xff: str | None, expected: str | None) -> None:
    got = client_address(peer, xff, PROXY)
    assert (str(got) if got else None) == expected
