"""SQS consumer (WebhookQueue): one verified Stripe event per message, deduplicated by event id, dispatched by type.

Claim/complete (functions/shared/tables.py WebhookEventsTable): a delivery claims the event (a lease of LEASE_S),
runs its handler, and marks it DONE only after the handler succeeded. A duplicate of a DONE event is acknowledged
and changes nothing. A handler that raises releases its lease and fails the record (partial batch response): SQS
delivers it again, and after MAX_RECEIVE_COUNT tries it lands in WebhookDlq (alarm). Killed between the handler
and `complete`: the lease runs out (LEASE_S < the queue's visibility timeout) and the redelivery runs the handler
again, which every handler allows (they only ask the status machine's conditional moves or re-drive idempotent
paths; none sets a status from the event). A second delivery while the first holds a live lease fails and comes
back later, so one event's handler never runs twice at the same time.
"""

from __future__ import annotations

import uuid
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.executor import refund as refund_path
from functions.shared import clock
from functions.shared.tables import WebhookEventsTable
from functions.webhooks import registry
from functions.webhooks.events import WebhookEvent
from functions.webhooks.metrics import metrics

logger = Logger(service="webhooks")
processor = BatchProcessor(event_type=EventType.SQS)

# The processor's timeout is 30 s (infra/names.py WEBHOOK_PROCESSOR); the queue's visibility timeout is 6x that.
LEASE_S = 60
DUPLICATE = "duplicate"


def process(raw_event: str, events: WebhookEventsTable | None = None) -> str:
    """One event, at most once to DONE; returns the outcome (logged, counted, read by tests)."""
    event = WebhookEvent.model_validate_json(raw_event)
    events = events or WebhookEventsTable.from_settings()
    token = uuid.uuid4().hex
    if not events.claim(event.id, event.type, token, clock.now(), LEASE_S):
        return DUPLICATE
    try:
        outcome = registry.dispatch(event)
    except Exception as error:
        events.release(event.id, token, f"{type(error).__name__}: {error}", clock.now())
        raise
    events.complete(event.id, token, outcome, clock.now())
    return outcome


def _record(record: SQSRecord) -> None:
    outcome = process(record.body)
    logger.info("webhook event", extra={"message_id": record.message_id, "outcome": outcome})
    metrics.add_metric(name=f"WebhookOutcome_{outcome}", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
    finally:
        # The refund path counts its own metrics (RefundMismatch, RefundFailedAfterSuccess, owed); run from here,
        # they are this function's to publish, or their alarms would never hear of a webhook-driven mismatch.
        if refund_path.metrics.provider.metric_set:
            refund_path.metrics.flush_metrics()
