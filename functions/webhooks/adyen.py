"""Adyen's notifications (queued by functions/webhooks/adyen_receiver.py as `adyen.<eventCode>` events whose object
is the item's signed fields) handed to the paths that own them. Nothing here sets a status: the refund path's one
entry (`functions.executor.refund.apply_psp_refund`) moves a refund by its status machine (PENDING -> SUCCEEDED |
FAILED by conditional writes, never back), so duplicated and reordered notifications change nothing twice.

- REFUND, success true: the refund SUCCEEDED (books once, by its timing); success false: FAILED, the order's
  reservation given back (Adyen refused it: nothing was refunded).
- REFUND_FAILED, REFUNDED_REVERSED (success true): the refund failed after Adyen had accepted it, or the refunded
  money came back: as Stripe's `refund.failed` (a PENDING refund FAILED; a SUCCEEDED one is counted
  RefundFailedAfterSuccess, alarmed, for a human: never moved backwards).
- AUTHORISATION: acknowledged and counted (AdyenAuthorisations): the executor has the charge's outcome from the
  payment's own answer; a charge it saw Received/Pending stays PspOutcomeUnknown for a human, who can see the
  notification's outcome in the processor's log (pspReference, success) and in Adyen's settlement file.
- any other eventCode: acknowledged and counted by the registry (`WebhooksUnknownType`).

The refund is the one our reference names (merchantReference = our refund_id, which the adapter sends as the
modification's reference); the signed amount must be the refund's. A refund naming none of ours, or another amount,
is money our books do not hold: ReviewQueue (one discrepancy per pspReference and event code).
"""

from __future__ import annotations

import hashlib
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from functions.executor import refund as refund_path
from functions.shared import queues
from functions.shared.adyen_units import from_adyen_amount
from functions.shared.money import Money, MoneyError
from functions.shared.names import ADYEN_EVENT_PREFIX
from functions.shared.psp_port import RefundResult
from functions.shared.tables import RefundsTable
from functions.webhooks.events import WebhookEvent
from functions.webhooks.metrics import metrics
from functions.webhooks.refunds import FAILED_AFTER_SUCCESS, FAILED_AFTER_SUCCESS_CATEGORY

logger = Logger(service="webhooks")

REFUND, REFUND_FAILED, REFUNDED_REVERSED, AUTHORISATION = "REFUND", "REFUND_FAILED", "REFUNDED_REVERSED", \
    "AUTHORISATION"
REVIEW, ACKNOWLEDGED, NOT_APPLICABLE = "review", "acknowledged", "not_applicable"


def _success(item: dict[str, Any]) -> bool:
    return str(item.get("success")) == "true"


def refund_notification(event: WebhookEvent) -> str:
    """REFUND: Adyen's outcome of our refund request."""
    item = event.obj
    if _success(item):
        return _apply(event, RefundResult("succeeded", str(item["pspReference"]), str(item.get("merchantReference"))))
    return _apply(event, RefundResult("failed", str(item["pspReference"]), str(item.get("merchantReference")),
                                      failure_code="adyen_refund_refused",
                                      failure_reason=item.get("reason") or "Adyen refused the refund"))


def refund_undone(event: WebhookEvent) -> str:
    """REFUND_FAILED (the refund failed after Adyen accepted it), REFUNDED_REVERSED (the refunded amount came back to
    our account): as Stripe's refund.failed. Only a `true` success says it happened."""
    item = event.obj
    code = str(item.get("eventCode"))
    if not _success(item):
        logger.warning("an Adyen refund event that says it did not happen", extra={"event_id": event.id})
        return NOT_APPLICABLE
    return _apply(event, RefundResult("failed", str(item["pspReference"]), str(item.get("merchantReference")),
                                      failure_code=f"adyen_{code.lower()}",
                                      failure_reason=item.get("reason") or code))


def authorisation(event: WebhookEvent) -> str:
    item = event.obj
    logger.info("Adyen AUTHORISATION acknowledged", extra={"event_id": event.id,
                                                           "merchant_reference": item.get("merchantReference"),
                                                           "success": item.get("success")})
    metrics.add_metric(name="AdyenAuthorisations", unit=MetricUnit.Count, value=1)
    return ACKNOWLEDGED


def _apply(event: WebhookEvent, result: RefundResult) -> str:
    refund = RefundsTable.from_settings().get(result.refund_id) if result.refund_id else None
    if refund is None:
        _review(event, "refund_not_ours", "names no refund of ours: money moved that our books do not hold")
        return REVIEW
    try:
        said = from_adyen_amount(event.obj.get("amount") or {})
    except MoneyError:
        said = None
    ours = Money(int(refund["amount_minor"]), refund["currency"])
    if said != ours:
        logger.error("an Adyen refund notification for another amount than our refund's",
                     extra={"refund_id": result.refund_id, "event_id": event.id})
        metrics.add_metric(name="RefundMismatch", unit=MetricUnit.Count, value=1)
        _review(event, "refund_amount_mismatch", f"is for {said}, our refund {result.refund_id} is for {ours}")
        return REVIEW
    outcome = refund_path.apply_psp_refund(result)
    if outcome == FAILED_AFTER_SUCCESS:  # our books keep it refunded (never moved backwards): a human decides
        _review(event, FAILED_AFTER_SUCCESS_CATEGORY, "failed after Adyen reported the refund succeeded: the buyer "
                "may not have the money back, and our books still say refunded")
    return outcome


def _review(event: WebhookEvent, category: str, what: str) -> None:
    item = event.obj
    psp_reference = str(item.get("pspReference") or "")
    identity = f"webhooks:{category}:adyen:{psp_reference}:{item.get('eventCode')}"
    queues.send_for_review({
        "source": "webhooks", "category": category,
        "explanation": f"Adyen {item.get('eventCode')} {psp_reference} (success {item.get('success')}) {what}",
        "discrepancy_id": hashlib.sha256(identity.encode()).hexdigest()[:32],
        "psp": "adyen", "psp_refund_id": psp_reference, "event_id": event.id,
        "merchant_reference": item.get("merchantReference"), "original_reference": item.get("originalReference"),
        "amount": item.get("amount")})


HANDLERS = {
    f"{ADYEN_EVENT_PREFIX}{REFUND}": refund_notification,
    f"{ADYEN_EVENT_PREFIX}{REFUND_FAILED}": refund_undone,
    f"{ADYEN_EVENT_PREFIX}{REFUNDED_REVERSED}": refund_undone,
    f"{ADYEN_EVENT_PREFIX}{AUTHORISATION}": authorisation,
}
