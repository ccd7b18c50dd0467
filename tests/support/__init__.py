"""Test doubles shipped with the package: a fake Portal API, and a driver acting as Portal."""

from tests.support.driver import GatewayDriver, RoundTrip
from tests.support.fake_portal import Call, FakePortal

__all__ = ["Call", "FakePortal", "GatewayDriver", "RoundTrip"]
