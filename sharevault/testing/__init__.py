"""Test doubles shipped with the package: a fake Portal API, and a driver acting as Portal."""

from sharevault.testing.driver import GatewayDriver, RoundTrip
from sharevault.testing.fake_portal import Call, FakePortal

__all__ = ["Call", "FakePortal", "GatewayDriver", "RoundTrip"]
