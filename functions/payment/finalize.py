"""Workflow task: the order's final status, and the checkout's is_payment_done once all its orders are final.

Called with the workflow state: the order fields, `charge` (the executor's result) and `outcome`
(succeeded | failed | pending); a Catch of PspPermanentError arrives with `error` {Error, Cause} instead.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.shared import clock
from functions.shared.models import OrderWork
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables

logger = Logger(service="finalize")

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


def finalize(state: dict[str, Any], tables: PaymentTables | None = None) -> dict[str, Any]:
    tables = tables or PaymentTables.from_settings()
    work = OrderWork.model_validate(state)
    charge = state.get("charge") or {}
    outcome = state.get("outcome") or charge.get("outcome")
    now = clock.now()
    if outcome == "pending":
        tables.record_pending(work.payment_order_id, charge.get("psp_reference", ""), charge.get("psp_status", ""),
                              clock.iso(now + PENDING_RECHECK), clock.iso(now))
        return {"payment_order_status": OrderStatus.EXECUTING.value, "psp_status": charge.get("psp_status")}
    if outcome == "succeeded":
        status = OrderStatus.SUCCESS
        fields: dict[str, Any] = {"psp_reference": charge.get("psp_reference") or None,
                                  "psp_status": charge.get("psp_status") or None,
                                  "wallet_updated": True, "ledger_updated": True}
    elif outcome == "failed" or state.get("error"):
        status = OrderStatus.FAILED
        code, reason = _failure(state)
        fields = {"failure_code": code, "failure_reason": reason[:500],
                  "psp_reference": charge.get("psp_reference") or None}
    else:
        raise ValueError(f"unknown outcome {outcome!r} for {work.payment_order_id}")
    fields = {k: v for k, v in fields.items() if v is not None}
    changed = tables.finish(work.payment_order_id, status, fields, clock.iso(now))
    done = tables.settle_checkout_order(work.checkout_id, work.payment_order_id)
    return {"payment_order_status": status.value, "changed_now": changed, "is_payment_done": done}


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = finalize(event)
    logger.info("order finalized", extra={"payment_order_id": event.get("payment_order_id"), **result})
    return result
