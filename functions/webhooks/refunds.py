"""Refund events: `refund.created`, `refund.updated`, `charge.refund.updated`, `refund.failed` carry a Refund
object; its final word (succeeded, failed, canceled) goes to the refund path's one entry,
`functions.executor.refund.apply_psp_refund`, which moves our refund by conditional writes (PENDING ->
SUCCEEDED | FAILED, never back) and runs its remaining steps (books once, the reversal under its key). So a
refund pending at Stripe is finished by its event instead of waiting for the worker's next poll, and duplicated
or out-of-order events change nothing: the status machine decides, never arrival order.

A non-final status (pending, requires_action) is acknowledged without a call: the worker's poll owns a pending
refund (a call would queue a second poll chain). `charge.refunded` carries the Charge, which names no Refund
(Stripe stopped listing them in it in 2022-11-15): the refund events above say everything it could, so it is
acknowledged. A Refund that names no refund of ours (made in the Dashboard, or another platform's) is money we
did not book: a ReviewQueue discrepancy, one per Refund (deterministic `discrepancy_id`).

Safe to die anywhere: the processor's claim lease runs out and the event is handled again; apply_psp_refund is
idempotent.
"""

from __future__ import annotations

import hashlib

from aws_lambda_powertools import Logger

from functions.executor import refund as refund_path
from functions.shared import psp_units, queues
from functions.webhooks.events import WebhookEvent

logger = Logger(service="webhooks")

REFUND_OBJECT_TYPES = ("refund.created", "refund.updated", "charge.refund.updated", "refund.failed")
CHARGE_REFUNDED = "charge.refunded"
FINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})

NOT_FINAL = "not_final"
COVERED = "covered_by_refund_events"
REVIEW = "review"
FAILED_AFTER_SUCCESS = "failed_after_success"  # functions/executor/refund.py's outcome word
FAILED_AFTER_SUCCESS_CATEGORY = "refund_failed_after_success"


def refund_event(event: WebhookEvent) -> str:
    """A Refund object's event: its final status applied to our refund; returns the path's outcome word."""
    obj = event.obj
    if obj.get("object") not in (None, "refund"):
        logger.warning("refund event without a Refund object", extra={"event_id": event.id,
                                                                      "object": obj.get("object")})
        return "not_a_refund"
    if str(obj.get("status")) not in FINAL_STATUSES:
        return NOT_FINAL
    outcome = refund_path.apply_psp_refund(obj)
    if outcome == "unknown_refund":
        _review(event, "refund_not_ours", "names no refund of ours: money moved that our books do not hold")
        return REVIEW
    if outcome == FAILED_AFTER_SUCCESS:  # our books keep it refunded (never moved backwards): a human decides
        _review(event, FAILED_AFTER_SUCCESS_CATEGORY, "failed after Stripe called it succeeded: the buyer may not "
                "have the money back, and our books still say refunded")
    return outcome


def charge_refunded(event: WebhookEvent) -> str:
    """The Charge's refunded total changed: the Refund's own events carry the refund; nothing to do here."""
    return COVERED


def _review(event: WebhookEvent, category: str, what: str) -> None:
    obj = event.obj
    psp_refund_id = str(obj.get("id") or "")
    currency = str(obj.get("currency") or "").upper()
    amount = psp_units.from_stripe_amount(currency, int(obj["amount"])).minor \
        if currency and obj.get("amount") is not None else None
    identity = f"webhooks:{category}:{psp_refund_id}"
    queues.send_for_review({
        "source": "webhooks", "category": category,
        "explanation": f"Stripe refund {psp_refund_id} ({obj.get('status')}) {what}",
        "discrepancy_id": hashlib.sha256(identity.encode()).hexdigest()[:32],
        "psp_refund_id": psp_refund_id, "event_id": event.id, "amount_minor": amount, "currency": currency,
        "charge": obj.get("charge"), "payment_intent": obj.get("payment_intent"),
        "payment_order_id": event.metadata.get("payment_order_id")})
