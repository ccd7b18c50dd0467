"""Settings: parsed once from the environment (prefix SHAREVAULT_) and passed down."""

from __future__ import annotations

import base64
import binascii
import os
from typing import Annotated, Literal

from pydantic import (
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sharevault.messages import MAX_RETRY_LEVELS

KEY_BYTES = 32
# The client routes prove a bearer with Portal first: that check gets at most this many seconds
# of the request budget (or PORTAL_TIMEOUT, if shorter).
IDENTITY_CHECK_SECONDS = 3.0
DEFAULT_SECRETS_DIR = "/run/secrets"


# The settings only some commands need (Settings.require).
OptionalSecret = Literal["webhook_secret", "encryption_keys", "portal_api_key"]


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and never echoes its value."""


def parse_keyring(raw: str) -> list[tuple[str, bytes]]:
    """Parse `kid:base64key,kid:base64key` into (key id, 32-byte key) pairs, first one current."""
    keys: list[tuple[str, bytes]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        kid, sep, encoded = item.partition(":")
        if not sep or not kid or len(kid) > 64 or not kid.isascii() or not kid.isprintable():
            raise ValueError("each entry must be <key id>:<base64 of 32 bytes>")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {kid!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise ValueError(f"key {kid!r} must decode to {KEY_BYTES} bytes")
        if any(kid == k for k, _ in keys):
            raise ValueError(f"key id {kid!r} appears twice")
        keys.append((kid, key))
    if not keys:
        raise ValueError("at least one key is required")
    return keys


class Settings(BaseSettings):
    """Every knob of gateway and worker; nothing else reads the environment."""

    model_config = SettingsConfigDict(
        env_prefix="SHAREVAULT_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/sharevault")
    # One broker URL, or a cluster's nodes separated by commas: each process links to the first
    # that answers, and to another after a loss.
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # Try the nodes of AMQP_URL in shuffled order, spreading processes over a cluster; off to
    # keep the given order (tests, or a preferred node).
    amqp_shuffle: bool = True
    # Every exchange and queue name starts with this: tests and tenants can share a broker.
    amqp_prefix: str = Field(default="sharevault", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # Gateway processes accepting on the port (SO_REUSEPORT), under one supervising `serve`.
    # 0: one per core this process may run on (one process uses one core at most).
    http_processes: int = Field(default=0, ge=0, le=64)
    webhook_root: str = Field(default="/webhook", pattern=r"^(/[A-Za-z0-9_.\-]+)*$")
    client_root: str = Field(default="/portal", pattern=r"^(/[A-Za-z0-9_.\-]+)*$")
    # Required only by the commands that use them (`Settings.require`): the gateway needs both,
    # the worker and the key tools the keys, `migrate`, `stats` and `dlq` neither.
    webhook_secret: SecretStr | None = None
    webhook_secret_previous: SecretStr | None = None
    encryption_keys: Annotated[SecretStr | None, NoDecode] = None
    portal_api_url: str = "https://api.portalhq.io"
    # Webhook callers allowed (e.g. Portal's egress IPs), comma-separated CIDRs; empty: any.
    allowed_ips: Annotated[list[IPvAnyNetwork], NoDecode] = []
    # Proxies whose X-Forwarded-For is believed, comma-separated CIDRs.
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = []
    # The custodian API key: only `register-webhook` needs it.
    portal_api_key: SecretStr | None = None
    portal_timeout: float = Field(default=5.0, gt=0, le=60)
    # How Portal learns a client share is stored: v3 needs a pair id (v2 otherwise); off: never.
    portal_report_api: Literal["v3", "v2", "off"] = "v3"
    # How long a bearer proven against Portal stays trusted (keyed by its hash, never the token).
    client_auth_ttl: float = Field(default=30.0, ge=0, le=3600)

    publish_timeout: float = Field(default=2.0, gt=0, le=8)
    # Coalescing (docs/queues.md): while PUBLISH_IN_FLIGHT messages await their confirm, the
    # shares accepted meanwhile wait and travel together as one message (one confirm), up to
    # PUBLISH_BATCH shares or PUBLISH_BATCH_BYTES, each batch once it waited PUBLISH_LINGER_MS for
    # company (at moderate load most shares would otherwise travel alone, at the broker's and the
    # worker's full per-message cost). PUBLISH_BATCH=1 turns coalescing off.
    publish_in_flight: int = Field(default=2, ge=1, le=64)
    publish_linger_ms: float = Field(default=5.0, ge=0, le=1000)
    publish_batch: int = Field(default=64, ge=1, le=1000)
    publish_batch_bytes: int = Field(default=1024 * 1024, ge=16 * 1024, le=64 * 1024 * 1024)
    # How long /backup waits for the worker's commit before answering 2xx anyway (still durable).
    commit_wait: float = Field(default=5.0, ge=0, le=8)

    # --- Hard budget and per-client bounds (docs/operations.md, "Budget and bounds per client") ---
    # Every webhook and client route answers within this many seconds, whatever hangs (Portal
    # gives up at 10 s). The waits below are checked at start to fit in it.
    request_budget: float = Field(default=9.0, gt=0, le=60)
    # Longest the gateway's method-cap query may take before the write goes on without it (the
    # worker enforces the cap), and each look of the commit wait at the table.
    db_timeout: float = Field(default=1.0, gt=0, le=30)
    # Newest pair ids kept per (client, kind, backup method): a re-backup prunes older pairs in
    # the statement that stores it; the newest is never pruned.
    pairs_per_method: int = Field(default=8, ge=1, le=1000)
    # Distinct backup methods one client may hold per kind; a new one beyond → 409.
    methods_per_client: int = Field(default=16, ge=1, le=1000)
    # Largest request body accepted (413 beyond): a share is typically 5-10 KB.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # --- Slow and greedy callers (docs/operations.md, "Security"), per gateway process ---
    # A connection closes when a request's headers have not all arrived this many seconds after
    # it opened or after its last answer (slow headers, and the idle keep-alive limit).
    idle_timeout: float = Field(default=10.0, gt=0, le=300)
    # A request whose body has not all arrived this many seconds after its headers → 408, closed.
    body_timeout: float = Field(default=5.0, gt=0, le=60)
    # Open connections beyond this → 503 + Retry-After at once, and closed.
    max_connections: int = Field(default=1024, ge=1, le=1_000_000)
    # Requests being handled beyond this → 503 + Retry-After at once (no queueing without end).
    max_in_flight: int = Field(default=512, ge=1, le=1_000_000)
    # Writes per client id (each write route): a burst of RATE_LIMIT_BURST, then on average
    # RATE_LIMIT_PER_SECOND (a moving window); beyond → 429 + Retry-After. 0: off.
    rate_limit_burst: int = Field(default=20, ge=0, le=1_000_000)
    rate_limit_per_second: float = Field(default=1.0, gt=0, le=1_000_000)
    # Failed authentications per source address, the same way (webhook secret, client bearer).
    auth_failure_burst: int = Field(default=20, ge=0, le=1_000_000)
    auth_failure_per_second: float = Field(default=1.0, gt=0, le=1_000_000)
    # --- Tamper evidence and clock discipline (docs/operations.md, "Security") ---
    # A gateway whose clock is further than this from PostgreSQL's turns unready and refuses
    # writes (503 clock_skew); a worker dead-letters (`tampered`) a share whose version lies
    # further than this in the future.
    max_clock_skew: float = Field(default=0.5, gt=0, le=60)
    # How often each gateway compares its clock with PostgreSQL's (and once at start).
    clock_check_interval: float = Field(default=10.0, gt=0, le=3600)
    # Open shares sealed before seals bound their version and message id. Turn off once the
    # journal's retention has passed since the upgrade and `sharevault keys rotate` re-sealed
    # every row: then a legacy-sealed message is dead-lettered `tampered`.
    accept_legacy_seals: bool = True
    db_pool_size: int = Field(default=8, ge=1)
    # Every this many seconds the gateway hands the memory freed since back to the OS (glibc's
    # malloc_trim, sharevault/memory.py): after a burst its RSS returns to its steady level.
    # 0: never.
    memory_trim_every: float = Field(default=10.0, ge=0, le=3600)

    worker_prefetch: int = Field(default=256, ge=2)
    worker_batch_size: int = Field(default=128, ge=1)
    # 0: group commit, a batch is what arrived while the previous one was being committed.
    worker_linger_ms: float = Field(default=0.0, ge=0)
    # Prometheus /metrics of a worker (0: off, the default, so that several can share a host).
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    # Where autovacuum is off (globally or for the table), the worker vacuums `shares` itself once
    # its dead rows pass 1,000 + 20 % of the live ones (plain VACUUM, never FULL); false: never.
    worker_vacuum: bool = True
    # OpenTelemetry tracing over OTLP (needs the `otel` extra; endpoint from OTEL_* variables).
    otel: bool = False

    # Outage recovery (docs/queues.md). A message waiting longer than LIVE_TTL seconds in the live
    # queue moves (broker-side) to the backlog queue, which workers drain with a smaller share.
    live_ttl: float = Field(default=1.0, ge=0.05, le=60)
    # How often the gateway looks whether a worker consumes the live queue: while none does, new
    # shares go straight to the backlog instead of expiring into it (0: never look, always live).
    detour_check: float = Field(default=1.0, ge=0, le=60)
    backlog_prefetch: int = Field(default=64, ge=1)
    # Quorum-queue safety net: a message returned this many times (worker crashes) moves on.
    delivery_limit: int = Field(default=20, ge=1, le=1000)
    # Delay of each retry level in seconds; attempts past the last level stay at the last delay.
    retry_delays: Annotated[tuple[float, ...], NoDecode] = (1.0, 10.0, 60.0, 600.0)
    retry_max_attempts: int = Field(default=10, ge=1, le=1000)
    # How long a batch is held in-process while the database answers yet the batch keeps failing.
    retry_hold: float = Field(default=30.0, ge=0)
    # Ingest journal (a RabbitMQ stream): retention by age (RabbitMQ units Y M D h m s) and size.
    journal_max_age: str = Field(default="7D", pattern=r"^[1-9][0-9]{0,5}[YMDhms]$")
    journal_max_bytes: int = Field(default=10_000_000_000, ge=1_000_000)
    journal_segment_bytes: int = Field(default=100_000_000, ge=100_000, le=3_000_000_000)

    # Report-back outbox (in the worker): polling, retry schedule, and when to give up.
    outbox_poll_interval: float = Field(default=1.0, gt=0)
    outbox_batch_size: int = Field(default=32, ge=1, le=1000)
    outbox_backoff_initial: float = Field(default=1.0, gt=0)
    outbox_backoff_max: float = Field(default=300.0, gt=0)
    outbox_horizon: float = Field(default=86400.0, gt=0)
    # A claimed report is the sender's for this long (claim → send → settle, no lock held while
    # Portal is called); a sender that dies holding it gives it back when it runs out.
    outbox_lease: float = Field(default=15.0, gt=0, le=3600)
    # Settled reports (sent, failed, expired) are kept this many seconds for `stats` and audits,
    # then deleted by the worker; 0 keeps them forever.
    outbox_keep: float = Field(default=7 * 86400.0, ge=0)

    @field_validator("allowed_ips", "trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _delay_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("retry_delays")
    @classmethod
    def _delays_sane(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not 1 <= len(value) <= MAX_RETRY_LEVELS:
            raise ValueError(f"between 1 and {MAX_RETRY_LEVELS} delays, comma-separated")
        if any(not 0 < d <= 86400 for d in value):
            raise ValueError("each delay must be > 0 and at most 86400 seconds")
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _keyring_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_keyring(value.get_secret_value())
        return value

    @field_validator("webhook_secret", "webhook_secret_previous")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _waits_fit_budget(self) -> Settings:
        """The waits a request can make add up to no more than REQUEST_BUDGET."""
        budget = self.request_budget
        webhook = self.db_timeout + self.publish_timeout + self.commit_wait
        if webhook > budget:
            raise ValueError(
                f"SHAREVAULT_DB_TIMEOUT + PUBLISH_TIMEOUT + COMMIT_WAIT ({webhook:g}s) exceed"
                f" SHAREVAULT_REQUEST_BUDGET ({budget:g}s)"
            )
        client = self.identity_check + self.db_timeout + self.publish_timeout
        if client > budget:
            raise ValueError(
                "the identity check (min(SHAREVAULT_PORTAL_TIMEOUT, "
                f"{IDENTITY_CHECK_SECONDS:g}s)) + DB_TIMEOUT + PUBLISH_TIMEOUT ({client:g}s)"
                f" exceed SHAREVAULT_REQUEST_BUDGET ({budget:g}s)"
            )
        return self

    @model_validator(mode="after")
    def _lease_outlasts_a_report(self) -> Settings:
        if self.outbox_lease <= self.portal_timeout:
            raise ValueError("SHAREVAULT_OUTBOX_LEASE must exceed SHAREVAULT_PORTAL_TIMEOUT")
        return self

    @property
    def identity_check(self) -> float:
        """Seconds a client route may spend proving its bearer with Portal."""
        return min(self.portal_timeout, IDENTITY_CHECK_SECONDS)

    def require(self, *names: OptionalSecret) -> Settings:
        """These settings, which this command needs, are set; else ConfigError naming each."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            each = (f"SHAREVAULT_{n.upper()} is required" for n in missing)
            raise ConfigError("configuration error: " + "; ".join(each))
        return self

    def secret(self, name: OptionalSecret) -> str:
        """The value of a secret this command needs (ConfigError naming it when unset)."""
        value: SecretStr = getattr(self.require(name), name)
        return value.get_secret_value()

    @property
    def keyring(self) -> list[tuple[str, bytes]]:
        return parse_keyring(self.secret("encryption_keys"))

    @property
    def webhook_secrets(self) -> list[bytes]:
        secrets = [self.secret("webhook_secret").encode()]
        if self.webhook_secret_previous is not None:
            secrets.append(self.webhook_secret_previous.get_secret_value().encode())
        return secrets


def describe_error(exc: ValidationError) -> str:
    """One line naming each bad setting, with pydantic's reason but never the value."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        reason = "is required" if err["type"] == "missing" else err["msg"]
        if not err["loc"]:  # a rule across settings (its message names them)
            parts.append(reason.removeprefix("Value error, "))
            continue
        name = "SHAREVAULT_" + "_".join(str(p) for p in err["loc"]).upper()
        parts.append(f"{name} {reason}")
    return "configuration error: " + "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Read the environment (and the secrets directory) once; raise ConfigError with a safe
    one-line message."""
    # Docker secrets: a file named like the variable, lower case (e.g. /run/secrets/
    # sharevault_webhook_secret), in SHAREVAULT_SECRETS_DIR; the environment wins over a file.
    secrets_dir = os.environ.get("SHAREVAULT_SECRETS_DIR", DEFAULT_SECRETS_DIR)
    if os.path.isdir(secrets_dir):
        overrides = {"_secrets_dir": secrets_dir, **overrides}
    elif secrets_dir != DEFAULT_SECRETS_DIR:
        raise ConfigError("configuration error: SHAREVAULT_SECRETS_DIR is not a directory")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_error(exc)) from None


def mask_url(url: SecretStr) -> str:
    """A DSN fit for a log line: the password replaced by *** (one host or a libpq host list)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url.get_secret_value())
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return parts.geturl()
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))
