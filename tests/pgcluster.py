"""Moved to `sharevault.testing.pgcluster` (the drill runner uses it too); kept for old imports."""

from sharevault.testing.pgcluster import BIN, PgCluster, free_port

__all__ = ["BIN", "PgCluster", "free_port"]
