"""Deliverer Lambda: NotificationsQueue -> one signed POST per event to the storefront's endpoint.

2xx is delivered (the message is deleted). Anything else (another status, a redirect, a timeout, a refused
connection) is retried: the message's visibility is set to the next wait, base * 2^(attempt-1) with +-25% drawn
from the event id (so a storefront coming back is not hit by every event at once), at most
notification_backoff_max_s, and never past the end of the retry window (3 days after the event was queued), and
the message is reported as a batch item failure. A failure at or after the window's end sends the event to
NotificationsDlq (alarmed) and deletes it. No endpoint configured: the event is dropped (logged and counted),
as a PSP sends no events to an account without an endpoint.

Safe to die anywhere: before the POST's answer is read, the message comes back and is posted again; after a 2xx
but before the delete, the storefront receives the same event id twice (it deduplicates on it); after the dead
letter but before the delete, the event is dead-lettered again on its next receive (same event id).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from urllib3 import PoolManager, Timeout
from urllib3.exceptions import HTTPError

from functions.notify import signing
from functions.shared import clock, queues
from functions.shared.config import Settings, settings
from functions.shared.names import DEFAULT_CLIENT_ID, EVENT_ID_HEADER, SIGNATURE_HEADER
from functions.shared.observability import CORRELATION_FIELD, CORRELATION_HEADER, service_metrics
from functions.shared.tables import NotificationEndpointsTable

logger = Logger(service="notify")
metrics = service_metrics()

# SQS refuses a visibility above 12 h (counted from the receive).
MAX_VISIBILITY_S = 12 * 3600
USER_AGENT = "MarketPay-Notifications/1"

_pool: PoolManager | None = None
_pool_lock = threading.Lock()


def http() -> PoolManager:
    """One pool per process, built on first use: no retries, no redirects followed (a 3xx is a failure)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = PoolManager(retries=False, headers={"User-Agent": USER_AGENT})
        return _pool


class Outcome(StrEnum):
    """What became of one delivery (a metric each: Notifications_<value>)."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD_LETTERED = "dead_lettered"
    DROPPED = "dropped"  # no endpoint configured


@dataclass(frozen=True)
class Delivery:
    """One queued notification as received."""

    event: dict[str, Any]
    client_id: str
    enqueued_at: str
    attempt: int  # SQS's ApproximateReceiveCount: 1 on the first try
    receipt_handle: str

    @classmethod
    def of(cls, record: dict[str, Any]) -> Delivery:
        body = json.loads(record["body"])
        # A dead letter moved back by on-call (`ops dlq redrive notifications`) has no enqueued_at: its window
        # starts again when it was sent back.
        sent_ms = int(record.get("attributes", {}).get("SentTimestamp", 0)) or int(clock.now().timestamp() * 1000)
        enqueued_at = body.get("enqueued_at") or clock.iso(datetime.fromtimestamp(sent_ms / 1000, UTC))
        return cls(event=body["event"], client_id=body.get("client_id") or DEFAULT_CLIENT_ID,
                   enqueued_at=enqueued_at,
                   attempt=int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
                   receipt_handle=record["receiptHandle"])

    @property
    def body(self) -> bytes:
        """The bytes posted and signed: the same on every attempt."""
        return json.dumps(self.event, separators=(",", ":")).encode()


def backoff_s(attempt: int, event_id: str, config: Settings) -> int:
    """The wait after failed attempt `attempt` (1, 2, ...): doubling from the base, +-25% drawn from the event
    id and the attempt (deterministic: the same event waits the same on a replay), capped at the maximum."""
    base = config.notification_backoff_base_s * 2 ** min(attempt - 1, 30)
    draw = int.from_bytes(hashlib.sha256(f"{event_id}:{attempt}".encode()).digest()[:4], "big") / 2**32
    return max(1, min(int(base * (0.75 + 0.5 * draw)), config.notification_backoff_max_s, MAX_VISIBILITY_S))


def post(url: str, secret: str, delivery: Delivery, timeout_s: float) -> str | None:
    """POST the signed event; None when the endpoint answered 2xx, else what went wrong (for logs and the DLQ)."""
    body = delivery.body
    timestamp = int(clock.now().timestamp())
    headers = {"Content-Type": "application/json", EVENT_ID_HEADER: delivery.event["id"],
               SIGNATURE_HEADER: signing.signature_header(secret, timestamp, body)}
    if delivery.event.get(CORRELATION_FIELD):
        headers[CORRELATION_HEADER] = str(delivery.event[CORRELATION_FIELD])
    try:
        answer = http().request("POST", url, body=body, headers=headers, timeout=Timeout(total=timeout_s),
                                redirect=False, preload_content=True)
    except HTTPError as error:
        return f"{type(error).__name__}: {error}"[:500]
    if 200 <= answer.status < 300:
        return None
    return f"HTTP {answer.status}"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    retry_in_s: int = 0


def deliver(delivery: Delivery, endpoint: dict[str, Any] | None, config: Settings) -> Result:
    if endpoint is None:
        logger.warning("no notification endpoint: event dropped",
                       extra={"event_id": delivery.event["id"], "client_id": delivery.client_id})
        return Result(Outcome.DROPPED)
    log = {"event_id": delivery.event["id"], "type": delivery.event.get("type"), "client_id": delivery.client_id,
           "attempt": delivery.attempt}
    error = post(endpoint["url"], endpoint["secret"], delivery, config.notification_timeout_s)
    if error is None:
        logger.info("notification delivered", extra=log)
        return Result(Outcome.DELIVERED)
    now = clock.now()
    deadline = clock.parse_iso(delivery.enqueued_at) + timedelta(seconds=config.notification_retry_window_s)
    log["error"] = error
    if now >= deadline:
        queues.dead_letter_notification({
            "event_id": delivery.event["id"], "type": delivery.event.get("type"), "client_id": delivery.client_id,
            "url": endpoint["url"], "attempts": delivery.attempt, "error": error,
            "first_enqueued_at": delivery.enqueued_at, "dead_lettered_at": clock.iso(now), "event": delivery.event})
        logger.error("notification dead-lettered after its retry window", extra=log)
        return Result(Outcome.DEAD_LETTERED)
    left_s = int((deadline - now).total_seconds()) + 1
    wait_s = min(backoff_s(delivery.attempt, delivery.event["id"], config), left_s)
    logger.info("notification not delivered: retried later", extra={**log, "retry_in_s": wait_s})
    try:
        queues.retry_notification_after(delivery.receipt_handle, wait_s)
    except Exception:  # the message still comes back, after the queue's visibility timeout
        logger.exception("visibility not changed", extra=log)
    return Result(Outcome.RETRY, wait_s)


def process(records: list[dict[str, Any]]) -> list[str]:
    """Deliver each record; returns the message ids to keep (retried later)."""
    config = settings()
    endpoints: dict[str, dict[str, Any] | None] = {}
    table = NotificationEndpointsTable.from_settings(config)
    keep = []
    for record in records:
        delivery = Delivery.of(record)
        logger.set_correlation_id(delivery.event.get(CORRELATION_FIELD) or None)
        if delivery.client_id not in endpoints:
            endpoints[delivery.client_id] = table.get(delivery.client_id)
        outcome = deliver(delivery, endpoints[delivery.client_id], config).outcome
        metrics.add_metric(name=f"Notifications_{outcome}", unit=MetricUnit.Count, value=1)
        if outcome is Outcome.RETRY:
            keep.append(record["messageId"])
    return keep


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in process(event.get("Records", []))]}
