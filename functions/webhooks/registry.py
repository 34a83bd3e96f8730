"""The one map from a Stripe event type to its handler. Each handler takes the event and returns an outcome word.

Types with no handler:
- refund and dispute events (REFUND_PATH_TYPES): acknowledged and counted (`WebhooksAwaitingRefundPath`) until
  the refund path's `apply_psp_refund` is wired here; the merge of issue 16 does that;
- anything else: acknowledged and counted (`WebhooksUnknownType`), never retried: Stripe sends what the endpoint
  is subscribed to, and an event we cannot use will not become usable on a retry.
"""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from functions.webhooks import accounts, payments, transfers
from functions.webhooks.disputes import DISPUTE_TYPES, dispute_event
from functions.webhooks.events import WebhookEvent
from functions.webhooks.metrics import metrics

logger = Logger(service="webhooks")

Handler = Callable[[WebhookEvent], str]

HANDLERS: dict[str, Handler] = {
    "payment_intent.succeeded": payments.payment_intent_event,
    "payment_intent.payment_failed": payments.payment_intent_event,
    "payment_intent.canceled": payments.payment_intent_event,
    "payment_intent.processing": payments.payment_intent_event,
    "payment_intent.requires_action": payments.payment_intent_event,
    "account.updated": accounts.account_updated,
    "payout.paid": accounts.bank_payout,
    "payout.failed": accounts.bank_payout,
    "transfer.reversed": transfers.transfer_reversed,
}
# Disputes (issue 16): every charge.dispute.* type moves the books through functions/disputes/service.py.
HANDLERS.update(dict.fromkeys(DISPUTE_TYPES, dispute_event))

REFUND_PATH_TYPES = frozenset({
    "charge.refunded", "charge.refund.updated", "refund.updated", "refund.created", "refund.failed",
})
DISPUTE_PREFIX = "charge.dispute."

UNKNOWN_TYPE = "unknown_type"
AWAITING_REFUND_PATH = "awaiting_refund_path"


def dispatch(event: WebhookEvent) -> str:
    handler = HANDLERS.get(event.type)
    if handler is not None:
        return handler(event)
    if event.type in REFUND_PATH_TYPES or event.type.startswith(DISPUTE_PREFIX):
        metrics.add_metric(name="WebhooksAwaitingRefundPath", unit=MetricUnit.Count, value=1)
        logger.info("refund/dispute event acknowledged; not applied yet", extra={"event_type": event.type,
                                                                                 "event_id": event.id})
        return AWAITING_REFUND_PATH
    metrics.add_metric(name="WebhooksUnknownType", unit=MetricUnit.Count, value=1)
    logger.warning("webhook event of an unknown type acknowledged", extra={"event_type": event.type,
                                                                           "event_id": event.id})
    return UNKNOWN_TYPE
