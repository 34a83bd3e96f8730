"""Workflow task: every order of the charge final, then the checkout's is_payment_done, then the charge.

Called with the workflow state: the charge fields, `charge` (the executor's result) and maybe `outcome`
(succeeded | failed | pending); a Catch of PspPermanentError arrives with `error` {Error, Cause} instead.
A SUCCESS charge's orders each get their HELD pay-out. The charge is marked last: until then it stays in the
sweeper's index, so a finalize that died half-way is run again by the sweeper's next attempt (every write here
is conditional or idempotent).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.payment import payouts
from functions.shared import clock, observability
from functions.shared.config import settings
from functions.shared.errors import StatusTransitionRefused
from functions.shared.models import ChargeWork, OrderShare
from functions.shared.names import AWAITING_FUNDS
from functions.shared.observability import service_metrics
from functions.shared.psp_port import action_id
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables, transient_errors_retryable

logger = Logger(service="finalize")
metrics = service_metrics()

PENDING_RECHECK = timedelta(minutes=15)


def _failure(state: dict[str, Any]) -> tuple[str, str]:
    charge = state.get("charge") or {}
    if charge.get("failure_code"):
        return charge["failure_code"], charge.get("failure_reason") or charge["failure_code"]
    error = state.get("error") or {}
    cause = error.get("Cause") or ""
    try:
        message = json.loads(cause).get("errorMessage", cause)
    except (ValueError, AttributeError):
        message = cause
    return error.get("Error") or "failed", message or "payment failed"


def _final_fields(state: dict[str, Any], work: ChargeWork) -> tuple[OrderStatus, dict[str, Any]]:
    charge = state.get("charge") or {}
    outcome = state.get("outcome") or charge.get("outcome")
    common = {"psp_reference": charge.get("psp_reference") or None, "charge_id": charge.get("charge_id") or None,
              "psp_status": charge.get("psp_status") or None, "charge_key": work.charge_key}
    if outcome == "succeeded":
        return OrderStatus.SUCCESS, {**common, "wallet_updated": True, "ledger_updated": True}
    if outcome == "failed" or state.get("error"):
        code, reason = _failure(state)
        return OrderStatus.FAILED, {**common, "failure_code": code, "failure_reason": reason[:500]}
    raise ValueError(f"unknown outcome {outcome!r} for {work.charge_key}")


def _finish_order(tables: PaymentTables, order_id: str, status: OrderStatus, fields: dict[str, Any], now: str
                  ) -> bool:
    try:
        return tables.finish(order_id, status, fields, now)
    except StatusTransitionRefused:
        # A starter that died between the charge and its orders left this one NOT_STARTED: move it on first.
        tables.mark_orders_executing([order_id], now)
        return tables.finish(order_id, status, fields, now)


def _settled_order(work: ChargeWork, order: OrderShare, fields: dict[str, Any]) -> dict[str, Any]:
    return {"payment_order_id": order.payment_order_id, "seller_account": order.seller_account,
            "checkout_id": work.checkout_id, "currency": work.currency, "amount_minor": order.amount_minor,
            "psp": order.psp, "charge_id": fields.get("charge_id"),
            **({observability.CORRELATION_FIELD: work.correlation_id} if work.correlation_id else {})}


def _wait_for_buyer(tables: PaymentTables, work: ChargeWork, charge: dict[str, Any], now: datetime) -> None:
    """3-D Secure, PayPal or an ACH account to verify (issue 17): the buyer must complete a challenge, approve on
    PayPal's page, or confirm the microdeposits Stripe sent to their account. The orders show next_action (the
    client secret Stripe.js needs; PayPal's page and the return_url; Stripe's verification page; Adyen's action
    object for Drop-in); the charge waits until the deadline (set once, the first time), when the sweeper's next
    attempt cancels it (Adyen's: fails it, nothing to cancel), unless a payment_intent.succeeded / payment_failed /
    processing webhook, or the buyer's details for Adyen (POST .../payment_details), bring it forward."""
    config = settings()
    timeout_s = config.threeds_timeout_s
    if charge.get("action") == "adyen_action":  # Adyen's action object, for Drop-in's createFromAction
        next_action = {"type": "adyen_action", "action": json.loads(charge.get("adyen_action") or "{}"),
                       "action_id": action_id(charge.get("adyen_action") or "{}")}
    elif charge.get("action") == "verify_with_microdeposits":  # they reach the account in 1-2 business days
        next_action = {"type": "verify_with_microdeposits", "url": charge.get("redirect_url", "")}
        timeout_s = config.microdeposits_timeout_s
    elif charge.get("redirect_url"):
        next_action = {"type": "redirect_to_url", "url": charge["redirect_url"], "return_url": work.return_url}
    else:
        next_action = {"type": "use_stripe_sdk", "client_secret": charge.get("client_secret", "")}
    expires = clock.iso(now + timedelta(seconds=timeout_s))
    tables.record_charge_awaiting_action(work.charge_key, charge.get("psp_reference", ""), next_action, expires,
                                         work.payment_order_ids, clock.iso(now))


def finalize(state: dict[str, Any], tables: PaymentTables | None = None) -> dict[str, Any]:
    tables = tables or PaymentTables.from_settings()
    work = ChargeWork.model_validate(state)
    charge = state.get("charge") or {}
    now = clock.now()
    if (state.get("outcome") or charge.get("outcome")) == "pending":
        if charge.get("psp_status") == "requires_action":  # 3-D Secure (psp.REQUIRES_ACTION)
            _wait_for_buyer(tables, work, charge, now)
        elif charge.get("psp_status") == AWAITING_FUNDS:  # a check or money order: back to its funds' deadline
            stored = tables.get_charge(work.charge_key) or {}
            # funds recorded since the executor looked: due now, so the next attempt finds them
            due = clock.iso(now) if stored.get("offline_receipt") else str(stored.get("funds_due_by") or "")
            tables.record_charge_pending(work.charge_key, charge.get("psp_reference", ""), AWAITING_FUNDS,
                                         due or clock.iso(now + PENDING_RECHECK), clock.iso(now))
        else:
            # A bank debit's bank answers in days, by webhook (which brings the charge forward); the recheck is
            # the backstop. Anything else processing is looked at again soon.
            recheck = timedelta(seconds=settings().debit_recheck_s) if work.is_debit else PENDING_RECHECK
            tables.record_charge_pending(work.charge_key, charge.get("psp_reference", ""),
                                         charge.get("psp_status", ""), clock.iso(now + recheck), clock.iso(now))
        return {"charge_status": OrderStatus.EXECUTING.value, "psp_status": charge.get("psp_status")}
    status, fields = _final_fields(state, work)
    fields = {k: v for k, v in fields.items() if v is not None}
    stamp = clock.iso(now)
    changed = [order_id for order_id in work.payment_order_ids
               if _finish_order(tables, order_id, status, fields, stamp)]
    done = tables.settle_checkout_orders(work.checkout_id, work.payment_order_ids)
    if status is OrderStatus.SUCCESS:  # before the charge is marked: a resumed finalize creates what is missing
        payouts.create_held([_settled_order(work, order, fields) for order in work.orders], stamp)
    tables.finish_charge(work.charge_key, status, {k: v for k, v in fields.items() if k != "charge_key"}, stamp)
    return {"charge_status": status.value, "changed_now": changed, "is_payment_done": done}


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.set_correlation_id(event.get("correlation_id") or None)
    with transient_errors_retryable():
        result = finalize(event)
    logger.info("charge finalized", extra={"charge_key": event.get("charge_key"), **result})
    # SUCCESS / FAILED, or EXECUTING when the PSP said pending (looked at again later)
    metrics.add_metric(name=f"ChargesFinalized_{result['charge_status']}", unit=MetricUnit.Count, value=1)
    _count_orders(event, result)
    return result


def _count_orders(state: dict[str, Any], result: dict[str, Any]) -> None:
    """The orders this call made final (a finalize run again finds them final: counted once), the failed ones by
    their reason (a decline code, or the error that ended the workflow)."""
    changed = len(result.get("changed_now") or ())
    if not changed:
        return
    if result["charge_status"] == OrderStatus.SUCCESS.value:
        metrics.add_metric(name=observability.ORDERS_SUCCEEDED, unit=MetricUnit.Count, value=changed)
    elif result["charge_status"] == OrderStatus.FAILED.value:
        observability.dimensioned(observability.ORDERS_FAILED, changed, reason=_failure(state)[0])
