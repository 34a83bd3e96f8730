"""Adyen's notifications (queued by functions/webhooks/adyen_receiver.py as `adyen.<eventCode>` events whose object
is the item's signed fields) handed to the paths that own them. Nothing here sets a status: the refund path's one
entry (`functions.executor.refund.apply_psp_refund`) moves a refund by its status machine (PENDING -> SUCCEEDED |
FAILED by conditional writes, never back), so duplicated and reordered notifications change nothing twice.

- REFUND, success true: the refund SUCCEEDED (books once, by its timing); success false: FAILED, the order's
  reservation given back (Adyen refused it: nothing was refunded).
- REFUND_FAILED, REFUNDED_REVERSED (success true): the refund failed after Adyen had accepted it, or the refunded
  money came back: as Stripe's `refund.failed` (a PENDING refund FAILED; a SUCCEEDED one is counted
  RefundFailedAfterSuccess, alarmed, for a human: never moved backwards).
- AUTHORISATION: the payment's outcome, recorded on its EXECUTING charge (`psp_notified`) and the charge brought
  forward: the executor's next attempt decides a charge Adyen answered Received/Pending from it. While an attempt
  may be running the event comes back later, so it is compared with the outcome the charge ends on. A final charge it
  contradicts, or an authorised payment naming no charge of ours or another amount: ReviewQueue.
- CAPTURE_FAILED: money booked SUCCESS on an authorisation Adyen could not capture: ReviewQueue, books unmoved.
- any other eventCode: acknowledged and counted by the registry (`WebhooksUnknownType`).

The refund is the one our reference names (merchantReference = our refund_id, which the adapter sends as the
modification's reference); the signed amount must be the refund's. A refund naming none of ours, or another amount,
is money our books do not hold: ReviewQueue (one discrepancy per pspReference and event code).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from functions.executor import refund as refund_path
from functions.shared import clock, queues
from functions.shared.adyen_units import from_adyen_amount
from functions.shared.config import settings
from functions.shared.money import Money, MoneyError
from functions.shared.names import ADYEN_EVENT_PREFIX
from functions.shared.psp_port import FAILED, SUCCEEDED, RefundResult
from functions.shared.routing import ADYEN
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables, RefundsTable
from functions.webhooks.events import WebhookEvent
from functions.webhooks.metrics import metrics
from functions.webhooks.payments import EventNotYetApplicable
from functions.webhooks.refunds import FAILED_AFTER_SUCCESS, FAILED_AFTER_SUCCESS_CATEGORY

logger = Logger(service="webhooks")

REFUND, REFUND_FAILED, REFUNDED_REVERSED, AUTHORISATION = "REFUND", "REFUND_FAILED", "REFUNDED_REVERSED", \
    "AUTHORISATION"
CAPTURE_FAILED = "CAPTURE_FAILED"
REVIEW, NOT_APPLICABLE = "review", "not_applicable"


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


def authorisation(event: WebhookEvent, tables: PaymentTables | None = None) -> str:
    """AUTHORISATION: Adyen's outcome of a payment, our charge named by merchantReference (the adapter sends the
    charge_key). Recorded on an EXECUTING charge: the executor's next attempt decides a charge Adyen answered
    Received/Pending from it, and that charge's recheck is brought forward. While an attempt may be running, the
    event comes back (EventNotYetApplicable) until the charge is parked or final, so that it is always compared
    with the outcome our books end on: one it contradicts is money our books do not show (ReviewQueue)."""
    item = event.obj
    metrics.add_metric(name="AdyenAuthorisations", unit=MetricUnit.Count, value=1)
    tables = tables or PaymentTables.from_settings()
    key = str(item.get("merchantReference") or "")
    charge = tables.get_charge(key) if key else None
    if charge is None or charge.get("psp") != ADYEN:
        return _not_ours(event, "authorisation_not_ours", "names no charge of ours at Adyen: a payment our books "
                         "do not hold")
    try:
        said = from_adyen_amount(item.get("amount") or {})
    except MoneyError:
        said = None
    ours = Money(int(charge["amount_minor"]), charge["currency"])
    recorded = str(charge.get("psp_reference") or "")
    if said != ours or (recorded and recorded != item.get("pspReference")):
        return _not_ours(event, "authorisation_mismatch", f"is for {said} ({item.get('pspReference')}), our charge "
                         f"{key} is for {ours} ({recorded or 'no payment recorded yet'})", charge)
    notified = authorisation_result(item)
    if OrderStatus(charge["charge_status"]).is_final:
        return _against_final(event, charge, notified)
    now = clock.now()
    charge = tables.record_psp_notification(key, notified, clock.iso(now)) or tables.get_charge(key) or charge
    if OrderStatus(charge["charge_status"]).is_final:  # finalized between the read and the write
        return _against_final(event, charge, notified)
    first = charge.get("psp_notified") or {}
    if first.get("outcome") != notified["outcome"]:  # Adyen said the other outcome first: which one holds?
        _review(event, "authorisation_contradicted", f"contradicts the AUTHORISATION recorded first on {key} "
                f"({first.get('outcome')})", charge)
        return REVIEW
    if charge.get("dead_letter_reason") or "due_at" not in charge:
        logger.warning("a dead-lettered charge's outcome is now known: redrive it", extra={"charge_key": key})
        return "left_for_operator"  # `ops` redrives it, and the attempt decides from the record
    no_run_before = clock.iso(now + timedelta(seconds=settings().executing_deadline_s))
    if tables.bring_charge_forward(key, str(charge["due_at"]), clock.iso(now), no_run_before):
        return "redrive_due"
    # An attempt may be running, and may end on Adyen's own answer: back once it has, to compare (or bring forward)
    raise EventNotYetApplicable(f"{key}: an attempt may be running; the AUTHORISATION comes back")


def capture_failed(event: WebhookEvent, tables: PaymentTables | None = None) -> str:
    """CAPTURE_FAILED: Adyen could not capture a payment our charge booked SUCCESS on its authorisation (the adapter
    asks for immediate capture, captureDelayHours 0; a capture can still fail, e.g. the authorisation expired or
    the issuer refused it). The money never came in, yet the orders are SUCCESS and their sellers' shares may be
    paid out from the Stripe balance: for a human (ReviewQueue, alarmed), naming the charge and its orders. Our
    books are not moved here: undoing a SUCCESS (wallet, ledger, maybe a transfer) is the operator's decision."""
    item = event.obj
    metrics.add_metric(name="AdyenCaptureFailed", unit=MetricUnit.Count, value=1)
    tables = tables or PaymentTables.from_settings()
    key = str(item.get("merchantReference") or "")
    charge = tables.get_charge(key) if key else None
    if charge is None or charge.get("psp") != ADYEN:  # a failed capture moved no money: only counted
        metrics.add_metric(name="AdyenCaptureFailedNotOurs", unit=MetricUnit.Count, value=1)
        return "not_ours"
    _review(event, "capture_failed", f"Adyen could not capture the payment of charge {key} "
            f"({charge.get('charge_status')}): no money came in for its orders", charge)
    return REVIEW


def authorisation_result(item: dict[str, Any]) -> dict[str, str]:
    """The charge outcome an AUTHORISATION item says, in the executor's ChargeResult fields. `success` is signed and
    decides; `reason` is not signed, so it is only text (failure_reason), never the failure code."""
    reference = str(item.get("pspReference") or "")
    if _success(item):
        return {"outcome": SUCCEEDED, "psp_reference": reference, "psp_status": "Authorised"}
    return {"outcome": FAILED, "psp_reference": reference, "psp_status": "Refused", "failure_code": "refused",
            "failure_reason": str(item.get("reason") or "Refused")}


def _not_ours(event: WebhookEvent, category: str, what: str, charge: dict[str, Any] | None = None) -> str:
    """A payment our books do not hold: ReviewQueue if Adyen authorised it (money moved); a refused one (no money
    moved; a pay-by-link or a card check made outside MarketPay) is only counted."""
    if _success(event.obj):
        _review(event, category, what, charge)
        return REVIEW
    metrics.add_metric(name="AdyenAuthorisationsNotOurs", unit=MetricUnit.Count, value=1)
    return "not_ours"


def _against_final(event: WebhookEvent, charge: dict[str, Any], notified: dict[str, str]) -> str:
    status = OrderStatus(charge["charge_status"])
    if (notified["outcome"] == SUCCEEDED) == (status is OrderStatus.SUCCESS):
        return "already_final"
    if notified["outcome"] == SUCCEEDED:
        _review(event, "charge_succeeded_recorded_failed", f"says charge {charge['charge_key']} was authorised; "
                "our charge is FAILED: money taken that our books do not show", charge)
    else:
        _review(event, "charge_failed_recorded_succeeded", f"says charge {charge['charge_key']} was refused; our "
                "charge is SUCCESS", charge)
    return REVIEW


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


def _review(event: WebhookEvent, category: str, what: str, charge: dict[str, Any] | None = None) -> None:
    """One ReviewQueue message per pspReference, event code and category. A charge's review names the charge and its
    orders (as Stripe's does); a refund's names the refund's pspReference."""
    item = event.obj
    psp_reference = str(item.get("pspReference") or "")
    identity = f"webhooks:{category}:adyen:{psp_reference}:{item.get('eventCode')}"
    message: dict[str, Any] = {
        "source": "webhooks", "category": category,
        "explanation": f"Adyen {item.get('eventCode')} {psp_reference} (success {item.get('success')}) {what}",
        "discrepancy_id": hashlib.sha256(identity.encode()).hexdigest()[:32],
        "psp": ADYEN, "event_id": event.id, "merchant_reference": item.get("merchantReference"),
        "original_reference": item.get("originalReference"), "amount": item.get("amount")}
    if item.get("eventCode") == AUTHORISATION:
        message["psp_reference"] = psp_reference
    elif item.get("eventCode") == CAPTURE_FAILED:  # the capture's own reference; the payment's is the original
        message["psp_reference"] = str(item.get("originalReference") or psp_reference)
    else:
        message["psp_refund_id"] = psp_reference
    if charge is not None:
        message |= {"charge_key": charge["charge_key"], "checkout_id": charge.get("checkout_id"),
                    "payment_order_ids": [order["payment_order_id"] for order in charge.get("orders", [])]}
    queues.send_for_review(message)


HANDLERS = {
    f"{ADYEN_EVENT_PREFIX}{REFUND}": refund_notification,
    f"{ADYEN_EVENT_PREFIX}{REFUND_FAILED}": refund_undone,
    f"{ADYEN_EVENT_PREFIX}{REFUNDED_REVERSED}": refund_undone,
    f"{ADYEN_EVENT_PREFIX}{AUTHORISATION}": authorisation,
    f"{ADYEN_EVENT_PREFIX}{CAPTURE_FAILED}": capture_failed,
}
