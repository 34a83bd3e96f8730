"""Notifier Lambda: DynamoDB stream records (NEW_AND_OLD_IMAGES) of the watched tables -> NotificationsQueue.

Capture without dual writes: the code that moves a status writes only its table; this reads the table's stream.
Records are turned into events in stream order and sent in batches of ten. If SQS refuses one, the answer names
that record's sequence number as the batch's first failure, so Lambda retries from it (records before it are
done). Dying anywhere means the batch is read again: events already sent are sent again with the same id (the
storefront deduplicates on MarketPay-Event-Id). A record that cannot be turned into an event fails the batch
the same way; the mapping retries, halves the batch and finally sends the record's position to
NotificationStreamDlq (infra/constructs/notifications.py).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.notify.events import addressed_event_of, source_of
from functions.shared import clock, queues
from functions.shared.config import settings
from functions.shared.names import DEFAULT_CLIENT_ID
from functions.shared.observability import service_metrics

logger = Logger(service="notify")
metrics = service_metrics()


def message_body(event: dict[str, Any], client_id: str = DEFAULT_CLIENT_ID) -> str:
    """What NotificationsQueue carries: the event, whose endpoint it goes to, and when it was first queued (the
    start of its 3-day retry window)."""
    return json.dumps({"event": event, "client_id": client_id, "enqueued_at": clock.iso()}, separators=(",", ":"))


def events_of(records: list[dict[str, Any]]) -> list[tuple[str, str | None, dict[str, Any] | None]]:
    """(sequence number, client, event or None) for each record, in order: the event goes to the endpoint of the
    client its item belongs to (functions/auth/tenancy.py), with that client's ids."""
    config = settings()
    found = []
    for record in records:
        source = source_of(record.get("eventSourceARN", ""), config)
        addressed = addressed_event_of(record, source) if source else None
        client_id, event = addressed or (None, None)
        found.append((record["dynamodb"]["SequenceNumber"], client_id, event))
    return found


def process(records: list[dict[str, Any]]) -> list[str]:
    """Queue the events of `records`; returns the sequence numbers to retry from (at most one: the first)."""
    pending: list[tuple[str, str, dict[str, Any]]] = []
    for index, record in enumerate(records):
        try:
            (sequence, client_id, event), = events_of([record])
        except Exception:
            logger.exception("stream record not turned into an event", extra={"index": index})
            return _first_unsent(pending, records[index]["dynamodb"]["SequenceNumber"])
        if event is not None and client_id is None:
            logger.info("event of no client's item: not sent", extra={"event_id": event["id"], "type": event["type"]})
        elif event is not None and client_id is not None:
            pending.append((sequence, client_id, event))
    return _first_unsent(pending, None)


def _first_unsent(pending: list[tuple[str, str, dict[str, Any]]], failed_at: str | None) -> list[str]:
    """Send `pending` in order; the first sequence number not sent (or `failed_at` if all were), as a list."""
    for start in range(0, len(pending), 10):
        chunk = pending[start : start + 10]
        refused = set(queues.enqueue_notifications([(event["id"], message_body(event, client_id))
                                                    for _, client_id, event in chunk]))
        metrics.add_metric(name="NotificationsQueued", unit=MetricUnit.Count, value=len(chunk) - len(refused))
        if refused:
            logger.warning("events not queued", extra={"event_ids": sorted(refused)})
            return [next(sequence for sequence, _, event in chunk if event["id"] in refused)]
    return [failed_at] if failed_at else []


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    retry_from = process(event.get("Records", []))
    return {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in retry_from]}
