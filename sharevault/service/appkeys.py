"""Typed application keys, in one place."""

from __future__ import annotations

from aiohttp import web

from sharevault.broker import Broker
from sharevault.clock import ClockDiscipline, VersionClock
from sharevault.config import Settings
from sharevault.crypto import Keyring
from sharevault.db import Store
from sharevault.portal import PortalClient
from sharevault.service.client_auth import ClientAuthenticator
from sharevault.service.commits import CommitWaiter
from sharevault.service.publishing import Coalescer, Route

SETTINGS = web.AppKey("settings", Settings)
KEYRING = web.AppKey("keyring", Keyring)
STORE = web.AppKey("store", Store)
BROKER = web.AppKey("broker", Broker)
# The gateway's publishing of shares (coalesced), and their route (live, or the detour).
SHARES = web.AppKey("shares", Coalescer)
ROUTE = web.AppKey("route", Route)
WAITER = web.AppKey("waiter", CommitWaiter)
# The source of versions; set your own (e.g. a clock that is off, in tests) before start-up.
CLOCK = web.AppKey("clock", VersionClock)
DISCIPLINE = web.AppKey("clock_discipline", ClockDiscipline)
PORTAL = web.AppKey("portal", PortalClient)
# Set it before the app starts to put your own session auth in front of the client endpoints.
CLIENT_AUTH = web.AppKey[ClientAuthenticator]("client_auth")
