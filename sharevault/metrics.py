"""Prometheus metrics of gateway and worker. Labels are routes, outcomes and reasons only: never a
client id, share, secret or token."""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

# prometheus_client's own switch, read by it when imported: `sharevault serve` with several
# processes sets it for each of them, so that /metrics on any one shows the sum of all. A gauge
# says how its values from several processes combine (a queue depth is one value, not a sum).
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
LATEST: Final = "livemostrecent"

LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# --- gateway ---------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "sharevault_http_requests", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "sharevault_http_request_seconds", "HTTP request latency", ["route", "method"], buckets=LATENCY
)
PUBLISH_SECONDS = Histogram(
    "sharevault_publish_confirm_seconds", "Publish until the broker's confirm", buckets=LATENCY
)
PUBLISH_FAILURES = Counter(
    "sharevault_publish_failures", "Publishes the broker did not confirm (answered 503)"
)
THROTTLED = Counter(
    "sharevault_throttled_requests",
    "Requests refused at the edge: 429 rate limits (client writes, failed authentications) and"
    " 503 caps (connections, requests in flight), by route and reason",
    ["route", "reason"],
)
COMMIT_WAITS = Counter(
    "sharevault_commit_waits",
    "Read-your-writes waits by outcome (committed in time, or budget ran out: still durable)",
    ["outcome"],
)
COMMIT_WAIT_SECONDS = Histogram(
    "sharevault_commit_wait_seconds", "Confirm until the worker's commit was seen", buckets=LATENCY
)
DECRYPT_FAILURES = Counter(
    "sharevault_decrypt_failures",
    "Stored shares that failed to authenticate: never served, answered 500 undecryptable",
)
CLOCK_OFFSET = Gauge(
    "sharevault_clock_offset_seconds",
    "This gateway's clock minus PostgreSQL's, as last measured (versions are its clock in µs)",
    multiprocess_mode=LATEST,
)
CLOCK_SKEWED = Gauge(
    "sharevault_clock_skewed",
    "1 while this gateway's clock is beyond MAX_CLOCK_SKEW of PostgreSQL's: unready, writes 503",
    multiprocess_mode="livemax",
)
DETOUR = Gauge(
    "sharevault_publish_detour",
    "1 while no worker consumes the live queue and new shares go straight to the backlog",
    multiprocess_mode=LATEST,
)
QUEUE_MESSAGES = Gauge(
    "sharevault_queue_messages", "Messages ready in a queue", ["queue"], multiprocess_mode=LATEST
)
QUEUE_CONSUMERS = Gauge(
    "sharevault_queue_consumers", "Consumers of a queue", ["queue"], multiprocess_mode=LATEST
)

# --- worker ----------------------------------------------------------------------------------
WORKER_MESSAGES = Counter(
    "sharevault_worker_messages",
    "Messages settled by the worker: applied, stale (a newer share was stored), dead_lettered",
    ["outcome"],
)
WORKER_BATCH_SIZE = Histogram(
    "sharevault_worker_batch_size",
    "Messages per database transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
WORKER_COMMIT_SECONDS = Histogram(
    "sharevault_worker_commit_seconds", "Batch upsert transaction time", buckets=LATENCY
)
WORKER_RETRIES = Counter(
    "sharevault_worker_retries", "Transient failures retried, by reason", ["reason"]
)
DEAD_LETTERS = Counter("sharevault_dead_letters", "Messages dead-lettered, by reason", ["reason"])
OUTBOX_PENDING = Gauge(
    "sharevault_outbox_pending", "Reports to Portal not yet delivered", multiprocess_mode=LATEST
)
OUTBOX_REPORTS = Counter(
    "sharevault_outbox_reports",
    "Reports to Portal settled: sent, failed (Portal refused it, or its bearer does not open) or"
    " expired (Portal unreachable past OUTBOX_HORIZON); Portal was not told of a failed or expired",
    ["outcome"],
)
OUTBOX_OLDEST_SECONDS = Gauge(
    "sharevault_outbox_oldest_seconds",
    "Age of the oldest undelivered report to Portal",
    multiprocess_mode=LATEST,
)

# --- replay ----------------------------------------------------------------------------------
REPLAY_MESSAGES = Counter(
    "sharevault_replay_messages",
    "Messages re-fed by `sharevault replay`: applied, current (already stored), skipped",
    ["result"],
)
