"""The gateway: aiohttp app that validates, seals and queues shares, and serves them back."""

from sharevault.service.app import create_app

__all__ = ["create_app"]
