"""payment_intent.* events: the checkout charge they belong to is re-driven through the sweeper's path; the
outcome is decided by the PSP look-up of the next attempt and finalize's conditional writes, never by the event.

- The charge is named by the PaymentIntent's metadata `charge_key` (functions/shared/psp.py sets it); none, or no
  such charge: not ours (counted).
- A final charge: nothing to do. A PaymentIntent that succeeded for a charge we recorded FAILED is money taken
  that the books do not show: a ReviewQueue message (alarm), as reconciliation would raise it.
- A bank debit SUCCESS whose PaymentIntent failed afterwards (the buyer's bank returned it: ACH return, SEPA
  refusal), once a look-up at the PSP confirms it: every order is refunded through the refund path with the
  PSP's money already taken back (`taken_back_by_psp`): the seller's held share and the commission shrink, a
  transferred share is reversed or owed, as for any refund. Refund ids `returned:<order>` (a colon no storefront
  refund_id may hold): once, in any order. The charge is marked returned first, so a refund accepted before the
  return but refused by the PSP after it is booked as taken back too (functions/executor/refund.py).
- A deciding event for a debit whose execution may still be running is not acknowledged: SQS brings it back
  once that execution has ended, so a return never slips between a look-up and its finalize.
- succeeded / payment_failed / canceled for an EXECUTING charge parked on a pending answer: its sweep is made due
  now (PaymentTables.bring_charge_forward), only when no execution can still be running; otherwise the running
  attempt, or the sweeper at the deadline, decides. processing / requires_action change nothing: the charge
  already waits for its own recheck, and a late one after a decision is harmless.
Safe in any order and any number of times: each step is a read or a conditional write.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from aws_lambda_powertools import Logger

from functions.shared import clock, psp, queues
from functions.shared.config import settings
from functions.shared.models import DEBIT_PAYMENT_METHOD_TYPES as DEBIT_TYPES
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables
from functions.webhooks.events import WebhookEvent

logger = Logger(service="webhooks")



class EventNotYetApplicable(RuntimeError):
    """Raised to have SQS deliver the event again later (the processor releases it; not a failure)."""

RETURNED_PREFIX = "returned:"
DECIDING = frozenset({"payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled"})


def payment_intent_event(event: WebhookEvent, tables: PaymentTables | None = None) -> str:
    key = str(event.metadata.get("charge_key") or "")
    if not key:
        return "not_ours"
    tables = tables or PaymentTables.from_settings()
    charge = tables.get_charge(key)
    if charge is None:
        return "not_ours"
    status = OrderStatus(charge["charge_status"])
    if status.is_final:
        if status is OrderStatus.FAILED and event.type == "payment_intent.succeeded":
            _review_succeeded_but_failed(event, charge)
            return "review"
        if status is OrderStatus.SUCCESS and event.type == "payment_intent.payment_failed" and \
                charge.get("payment_method_type") in DEBIT_TYPES:
            return _debit_returned(charge)
        return "already_final"
    if event.type not in DECIDING:
        return "still_pending"
    if charge.get("dead_letter_reason"):
        return "left_for_operator"  # a human holds it (WorkflowDlq); `ops` redrives it
    if status is OrderStatus.NOT_STARTED or "due_at" not in charge:
        return _in_flight(charge)
    now = clock.now()
    no_run_before = clock.iso(now + timedelta(seconds=settings().executing_deadline_s))
    if tables.bring_charge_forward(key, charge["due_at"], clock.iso(now), no_run_before):
        logger.info("charge re-drive brought forward by a webhook", extra={"charge_key": key,
                                                                          "event_type": event.type})
        return "redrive_due"
    return _in_flight(charge)


def _in_flight(charge: dict) -> str:
    """A card's running attempt looks the PaymentIntent up itself. A debit's event is kept (SQS redelivers it):
    a return landing after that look-up would otherwise be lost once the attempt finalizes SUCCESS."""
    if charge.get("payment_method_type") in DEBIT_TYPES:
        raise EventNotYetApplicable(f"{charge['charge_key']}: an attempt may be running; the event comes back")
    return "in_flight"


def _debit_returned(charge: dict) -> str:
    """The PSP's own word first (the event may be old or forged): the PaymentIntent no longer succeeded."""
    from functions.payment import refunds
    from functions.payment.schemas import RefundRequest

    current = psp.client().retrieve(str(charge.get("psp_reference") or ""))
    if current.outcome != psp.FAILED:
        return "already_final"
    code = current.failure_code or "debit_returned"
    PaymentTables.from_settings().record_debit_returned(charge["charge_key"], code, clock.iso())
    for order in charge["orders"]:
        # built, not validated: the prefix's colon is outside what a storefront's refund_id may hold
        request = RefundRequest.model_construct(refund_id=f"{RETURNED_PREFIX}{order['payment_order_id']}",
                                                amount=None, reason=f"bank returned the debit: {code}")
        try:
            refunds.create_refund(order["payment_order_id"], request, taken_back_by_psp=code)
        except refunds.RefundExceedsRemaining:  # refunded in full before the return: nothing was left to take
            logger.info("debit returned after a full refund", extra={"payment_order_id": order["payment_order_id"]})
    logger.warning("bank debit returned after success: orders refunded", extra={
        "charge_key": charge["charge_key"], "code": code})
    return "debit_returned"


def _review_succeeded_but_failed(event: WebhookEvent, charge: dict) -> None:
    intent = event.obj
    identity = f"webhooks:charge_succeeded_recorded_failed:{intent.get('id')}"
    logger.warning("PaymentIntent succeeded for a charge recorded FAILED", extra={
        "charge_key": charge["charge_key"], "psp_reference": intent.get("id")})
    queues.send_for_review({
        "source": "webhooks", "category": "charge_succeeded_recorded_failed",
        "explanation": "the PSP reports this PaymentIntent succeeded; our charge is FAILED",
        "discrepancy_id": hashlib.sha256(identity.encode()).hexdigest()[:32],
        "charge_key": charge["charge_key"], "checkout_id": charge.get("checkout_id"),
        "psp_reference": intent.get("id"), "event_id": event.id,
        "payment_order_ids": [order["payment_order_id"] for order in charge.get("orders", [])]})
