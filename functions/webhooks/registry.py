"""The one map from a Stripe event type (or an Adyen notification's `adyen.<eventCode>`) to its handler. Each
handler takes the event and returns an outcome word.

Refund events (`refund.*`, `charge.refund.updated`, `charge.refunded`) go to functions/webhooks/refunds.py, which
hands a Refund's final status to the refund path's `apply_psp_refund`; dispute events (`charge.dispute.*`) to
functions/disputes/service.py through functions/webhooks/disputes.py.

A type with no handler is acknowledged and counted (`WebhooksUnknownType`), never retried: Stripe sends what the
endpoint is subscribed to, and an event we cannot use will not become usable on a retry.
"""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from functions.webhooks import accounts, adyen, payments, refunds, transfers
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
    **dict.fromkeys(refunds.REFUND_OBJECT_TYPES, refunds.refund_event),
    refunds.CHARGE_REFUNDED: refunds.charge_refunded,
    **dict.fromkeys(DISPUTE_TYPES, dispute_event),
    **adyen.HANDLERS,  # Adyen's notifications: `adyen.<eventCode>` (functions/webhooks/adyen_receiver.py)
}

UNKNOWN_TYPE = "unknown_type"


def dispatch(event: WebhookEvent) -> str:
    handler = HANDLERS.get(event.type)
    if handler is not None:
        return handler(event)
    metrics.add_metric(name="WebhooksUnknownType", unit=MetricUnit.Count, value=1)
    logger.warning("webhook event of an unknown type acknowledged", extra={"event_type": event.type,
                                                                           "event_id": event.id})
    return UNKNOWN_TYPE
