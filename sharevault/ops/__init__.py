"""Operator tools for outage recovery: the dead-letter queue and replay from the ingest journal."""
