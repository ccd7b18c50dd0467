"""`sharevault register-webhook`: tell Portal where the webhooks are and their secret."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import click

from sharevault.cli.common import fail, settings_or_exit
from sharevault.portal import PortalClient, PortalError, PortalRejected, with_retries


@click.command("register-webhook")
@click.option(
    "--url",
    "root_url",
    required=True,
    help="Webhook root Portal will call, e.g. https://custody.example.com/webhook.",
)
def register_webhook(root_url: str) -> None:
    """Register the webhook root and secret with Portal (needs SHAREVAULT_PORTAL_API_KEY)."""
    settings = settings_or_exit("webhook_secret", "portal_api_key")
    parts = urlsplit(root_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail("--url must be an absolute http(s) URL", 2)
    if parts.path.rstrip("/") != settings.webhook_root:
        click.echo(f"note: this gateway serves webhooks under {settings.webhook_root}", err=True)
    key = settings.secret("portal_api_key")
    secret = settings.secret("webhook_secret")

    def redact(text: str) -> str:
        # Portal might echo what it was sent: neither the key nor the secret is ever printed.
        for value in (key, secret):
            text = text.replace(value, "***")
        return text

    async def register() -> tuple[int, str]:
        async with PortalClient(settings.portal_api_url, timeout=settings.portal_timeout) as portal:
            answer = await with_retries(
                lambda: portal.register_webhook(key, root_url, secret), attempts=5, max_wait=30.0
            )
        return answer.status, answer.text

    try:
        status, text = asyncio.run(register())
    except PortalError as exc:
        kind = "refused" if isinstance(exc, PortalRejected) else "could not be reached for"
        click.echo(f"Portal {kind} the registration: {exc}", err=True)
        if exc.detail:
            click.echo(f"Portal answered: {redact(exc.detail)}", err=True)
        raise SystemExit(1) from None
    click.echo(f"Portal answered HTTP {status}: {redact(text) or '(empty body)'}")
