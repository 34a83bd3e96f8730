"""Checks and money orders (issue 17): an operator records the funds of a charge, or a bounce after it succeeded.

The API (`POST /v1/checkouts/{checkout_id}/offline_payments[/bounce]`, scope offline_payments:write) and
`python -m ops offline record|bounce` both call these functions: one home.

- **Record**: amount, currency and reference must be the charge's exactly (422 offline_*_mismatch otherwise). The
  receipt is written once on the charge, with its sweep due now: the sweeper's next run starts an attempt whose
  executor finds the receipt (no PSP call) and the usual workflow finalizes the orders SUCCESS (wallet pending
  credit, ledger pay-in to `bank_deposits`, HELD pay-outs). The same body again answers the same (a replay).
  After the funds' deadline (`funds_due_by`) nothing is recorded: the sweeper ends the orders FAILED
  funds_not_received, and a receipt racing it could otherwise be recorded for orders that fail.
- **Bounce**: only once the charge is SUCCESS. The bounce is noted on the charge and its orders (`bounced_at`),
  then each order is refunded in full of what remains through the refund path (refund id `<order>-bounce`): the
  Refund worker makes no PSP call for a `bank` refund (the bank took the money back), and books the refund as any
  other, the seller's share included (pay-out reduced, or its transfer reversed, or owed). Every step is
  idempotent, so a bounce sent again after dying half-way completes what is missing.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from functions.payment import refunds
from functions.payment.schemas import OfflineBounceRequest, OfflinePaymentRequest, OfflinePaymentView, RefundRequest
from functions.shared import clock
from functions.shared.errors import DomainError, NotFound, RequestInvalid
from functions.shared.money import Money
from functions.shared.names import charge_key, normal_offline_reference
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables

logger = Logger(service="payment")

BOUNCE_SUFFIX = "-bounce"
BOUNCE_REASONS = {"check": "check bounced", "money_order": "money order returned unpaid"}


class OfflineStateRefused(DomainError):
    """The charge is not in a state that allows this (not offline, not yet or no longer waiting, not settled)."""

    code = "offline_payment_refused"
    http_status = 409


def _mismatch(code: str, field: str, message: str) -> RequestInvalid:
    return RequestInvalid(message, code=code, details=[{"field": field, "code": code, "message": message}])


def _offline_charge(tables: PaymentTables, checkout_id: str, currency: str, reference: str) -> dict[str, Any]:
    """The checkout's offline charge in `currency`, its reference checked; the refusals name what differs."""
    event = tables.get_checkout(checkout_id)
    if event is None:
        raise NotFound(f"checkout {checkout_id} not found", code="checkout_not_found")
    if not event.get("offline_instructions"):
        raise OfflineStateRefused(f"checkout {checkout_id} is not paid by check or money order",
                                  code="checkout_not_offline")
    charge = tables.get_charge(charge_key(checkout_id, currency))
    if charge is None or not charge.get("offline_method"):
        raise _mismatch("offline_currency_mismatch", "currency", f"checkout {checkout_id} has no {currency} charge")
    if normal_offline_reference(reference) != charge["offline_reference"]:
        raise _mismatch("offline_reference_mismatch", "reference",
                        f"the reference is not the one of checkout {checkout_id} in {currency}")
    return charge


def _view(charge: dict[str, Any]) -> OfflinePaymentView:
    receipt = charge["offline_receipt"]
    return OfflinePaymentView(
        checkout_id=charge["checkout_id"], method=charge["offline_method"],
        amount=Money(int(receipt["amount_minor"]), receipt["currency"]).to_major(), currency=receipt["currency"],
        reference=receipt["reference"], status="bounced" if receipt.get("bounced_at") else "recorded",
        recorded_at=receipt["recorded_at"], bounced_at=receipt.get("bounced_at"))


def record_payment(checkout_id: str, request: OfflinePaymentRequest, tables: PaymentTables | None = None
                   ) -> tuple[OfflinePaymentView, bool]:
    """Record the funds of the checkout's charge in the request's currency; returns the receipt and whether this
    call was a replay (the same funds recorded before)."""
    tables = tables or PaymentTables.from_settings()
    money = request.money()
    charge = _offline_charge(tables, checkout_id, money.currency, request.reference)
    expected = Money(int(charge["amount_minor"]), money.currency)
    if money != expected:
        raise _mismatch("offline_amount_mismatch", "amount",
                        f"{money} is not the {expected} the checkout's {money.currency} orders wait for")
    if charge.get("offline_receipt"):
        return _view(charge), True
    now = clock.iso()
    receipt = {"amount_minor": money.minor, "currency": money.currency, "reference": charge["offline_reference"],
               "recorded_at": now}
    recorded = tables.record_offline_receipt(charge["charge_key"], receipt, now)
    if recorded is not None:
        logger.info("offline payment recorded", extra={"charge_key": charge["charge_key"]})
        return _view(recorded), False
    current = tables.get_charge(charge["charge_key"]) or charge
    if current.get("offline_receipt"):  # a concurrent call recorded it first: the same funds
        return _view(current), True
    if current["charge_status"] == OrderStatus.FAILED.value:
        raise OfflineStateRefused(f"the {money.currency} orders of checkout {checkout_id} failed "
                                  f"({current.get('failure_code', 'failed')}): nothing to record",
                                  code="offline_payment_closed")
    raise OfflineStateRefused(f"the funds were due by {current['funds_due_by']}: the orders are being failed "
                              "funds_not_received", code="offline_funds_overdue")


def bounce(checkout_id: str, request: OfflineBounceRequest, tables: PaymentTables | None = None
           ) -> tuple[OfflinePaymentView, bool]:
    """The recorded check or money order bounced: refund every order of the charge through the refund path.
    Refused before the charge is SUCCESS. Returns the receipt (status bounced) and whether it bounced before."""
    tables = tables or PaymentTables.from_settings()
    currency = request.currency.upper()
    charge = _offline_charge(tables, checkout_id, currency, request.reference)
    if not charge.get("offline_receipt"):
        raise OfflineStateRefused("no funds were recorded for this charge: nothing can bounce",
                                  code="offline_payment_not_recorded")
    if charge["charge_status"] != OrderStatus.SUCCESS.value:
        raise OfflineStateRefused("the recorded funds are not settled yet (the orders are not SUCCESS): send the "
                                  "bounce once they are", code="offline_payment_not_settled")
    now = clock.iso()
    bounced = tables.record_offline_bounce(charge["charge_key"], now)
    replayed = bounced is None
    current = bounced or tables.get_charge(charge["charge_key"]) or charge
    order_ids = [order["payment_order_id"] for order in current["orders"]]
    tables.mark_orders_bounced(order_ids, current["offline_receipt"]["bounced_at"])
    reason = BOUNCE_REASONS.get(current["offline_method"], "offline payment returned")
    for order_id in order_ids:  # each once (its refund id); again on a replay, which finds them made
        template = RefundRequest(refund_id="bounce", reason=reason)
        try:
            refunds.create_refund(order_id, template.model_copy(update={"refund_id": order_id + BOUNCE_SUFFIX}))
        except refunds.RefundExceedsRemaining:
            logger.info("order refunded in full before its bounce", extra={"payment_order_id": order_id})
    logger.info("offline payment bounced", extra={"charge_key": charge["charge_key"], "replayed": replayed})
    return _view(current), replayed
