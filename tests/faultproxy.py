"""Moved to `sharevault.testing.faultproxy` (the drill runner uses it too); kept for old imports."""

from sharevault.testing.faultproxy import CHUNK, FaultProxy, fault_proxy

__all__ = ["CHUNK", "FaultProxy", "fault_proxy"]
