"""Refund logic behind the API: accept a refund once (its reservation on the order atomic with it), read it
back. The Refund worker (functions/executor/refund.py) does the rest; docs/decisions.md "Refunds"."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from aws_lambda_powertools import Logger

from functions.payment.payouts import OrderNotSettled
from functions.payment.schemas import RefundRequest, RefundSummary, RefundView, ReversalView
from functions.shared import adyen_units, clock, psp_units, queues
from functions.shared.errors import AwsTransientError, DomainError, NotChargeableAtPsp, NotFound, RequestInvalid
from functions.shared.money import Money, MoneyError
from functions.shared.names import OFFLINE_PSP, UNRECORDED_PSP
from functions.shared.observability import CORRELATION_FIELD, correlated
from functions.shared.routing import ADYEN
from functions.shared.status import OrderStatus
from functions.shared.tables import (
    REFUND_PENDING,
    PaymentTables,
    RefundExists,
    RefundNotAccepted,
    RefundsTable,
    WriteConflict,
)

logger = Logger(service="payment")

_WRITE_ATTEMPTS = 6


class RefundExceedsRemaining(DomainError):
    """The refunds of the order (pending and succeeded) would pass its amount."""

    code = "refund_exceeds_remaining"
    http_status = 422


class RefundConflict(DomainError):
    """The refund_id exists with a different request."""

    code = "refund_id_conflict"
    http_status = 409


def fingerprint(payment_order_id: str, request: RefundRequest) -> str:
    """The request's meaning (the amount as asked: left out stays left out), however formatted."""
    canonical = {"payment_order_id": payment_order_id, "amount": request.amount, "reason": request.reason}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


# The PSPs whose refunds the Refund worker makes (functions/executor/refund.py _psp_of: Stripe's, and Adyen's, whose
# outcome comes by REFUND notification), and a check's or money order's, which have no PSP refund (offline).
REFUNDABLE_AT = (UNRECORDED_PSP, ADYEN, OFFLINE_PSP)


class RefundNotWired(DomainError):
    """A refund of an order charged at a PSP whose refunds are not wired (none today but a name no configuration
    made): refused, nothing held."""

    code = "refund_not_supported_for_psp"
    http_status = 409


def create_refund(payment_order_id: str, request: RefundRequest, tables: RefundsTable | None = None, *,
                  taken_back_by_psp: str = "", correlation_id: str = "") -> tuple[RefundView, bool]:
    """Accept the refund: returns its answer as first given and whether this call was a replay. The refund and
    the order's reservation are one transaction (`refunded + amount <= amount`), so concurrent refunds never pass
    the order. Then one message to the Refund worker; if that send is lost, a replay of the request sends it
    again (a PENDING refund not yet at the PSP), and the worker is idempotent.
    `taken_back_by_psp` (a bank debit returned after it succeeded: the bank's code): the PSP has already taken the
    money back, so the worker asks it for nothing and books the refund (seller's share, commission) at once.
    `correlation_id`: the API request's; without one (a bank's return, a bounced check), the checkout's. The
    refund's worker logs, PSP metadata and notifications carry it."""
    tables = tables or RefundsTable.from_settings()
    request_hash = fingerprint(payment_order_id, request)
    existing = tables.get(request.refund_id)
    if existing is not None:
        return _replayed(existing, request_hash), True
    order = PaymentTables.from_settings().get_order(payment_order_id)
    if order is None:
        raise NotFound(f"payment order {payment_order_id} not found", code="payment_order_not_found")
    if order["payment_order_status"] != OrderStatus.SUCCESS.value:
        raise OrderNotSettled(f"payment order {payment_order_id} is {order['payment_order_status']}, not SUCCESS")
    if (order.get("psp") or UNRECORDED_PSP) not in REFUNDABLE_AT and not taken_back_by_psp:
        # Checked before anything is reserved: a refund the worker cannot make would hold the order's amount.
        raise RefundNotWired(f"payment order {payment_order_id} was charged at {order['psp']}, whose refunds are "
                             "not wired yet: refund it in the PSP's own dashboard and tell the platform's operators")
    gross = Money(int(order["amount_minor"]), order["currency"])
    amount = _amount(request, gross, int(order.get("refunded_minor") or 0), order.get("psp") or UNRECORDED_PSP)
    now = clock.iso()
    item = correlated({
            "refund_id": request.refund_id, "payment_order_id": payment_order_id, "request_hash": request_hash,
            "seller_account": order["seller_account"], "currency": gross.currency, "amount_minor": amount.minor,
            "reason": request.reason, "psp": order.get("psp") or "stripe", "refund_status": REFUND_PENDING,
            "created_at": now, "updated_at": now,
            **({"taken_back_by_psp": taken_back_by_psp} if taken_back_by_psp else {})},
        correlation_id or order.get(CORRELATION_FIELD))
    for attempt in range(_WRITE_ATTEMPTS):
        try:
            tables.create(item, gross.minor)
            break
        except WriteConflict:
            if attempt == _WRITE_ATTEMPTS - 1:
                raise
            time.sleep(0.02 * 2**attempt)
        except RefundExists as exists:
            return _replayed(exists.existing or tables.get(request.refund_id) or item, request_hash), True
        except RefundNotAccepted as refused:
            if refused.reason == "not_settled":
                raise OrderNotSettled(f"payment order {payment_order_id} is not SUCCESS") from None
            if refused.reason == "not_found":
                raise NotFound(f"payment order {payment_order_id} not found", code="payment_order_not_found") from None
            remaining = gross.minor - int((refused.order or {}).get("refunded_minor") or 0)
            raise RefundExceedsRemaining(
                f"{amount} would pass what remains of the order ({Money(remaining, gross.currency)})") from None
    _send(request.refund_id)
    return as_accepted(item), False


def _amount(request: RefundRequest, gross: Money, committed: int, psp_name: str) -> Money:
    remaining = Money(gross.minor - committed, gross.currency)
    if request.amount is None:
        amount = remaining
        if amount.minor <= 0:
            raise RefundExceedsRemaining(f"nothing remains to refund of {gross}")
    else:
        try:
            amount = Money.from_major(request.amount, gross.currency)
        except MoneyError as error:
            raise RequestInvalid(error.message, code=error.code,
                                 details=[{"field": "amount", "code": error.code}]) from None
        if not amount.is_positive():
            raise RequestInvalid("amount must be greater than zero", code="amount_not_positive",
                                 details=[{"field": "amount", "code": "amount_not_positive"}])
        if amount.minor > remaining.minor:
            raise RefundExceedsRemaining(f"{amount} would pass what remains of the order ({remaining})")
    try:  # in the units of the PSP that charged the order (Stripe's ISK in hundreds; Adyen's table)
        if psp_name == ADYEN:
            adyen_units.adyen_amount(amount)
        else:
            psp_units.to_stripe_amount(amount)
    except NotChargeableAtPsp as error:
        raise RequestInvalid(error.message, code=error.code) from None
    except MoneyError as error:
        raise RequestInvalid(error.message, code=error.code) from None
    return amount


def _replayed(existing: dict[str, Any], request_hash: str) -> RefundView:
    if existing.get("request_hash") != request_hash:
        raise RefundConflict(f"refund {existing['refund_id']} exists with a different request")
    if existing["refund_status"] == REFUND_PENDING and not existing.get("psp_refund_id"):
        _send(existing["refund_id"])  # the first answer's send may have been lost
    return as_accepted(existing)


def _send(refund_id: str) -> None:
    """The stored PENDING refund to its worker. A failed send is the caller's 503, never a 202: nothing else
    would drive the refund, and the caller's retry is a replay that sends it again (as after a Lambda killed
    between the refund's transaction and this send: the caller got no answer and retries)."""
    try:
        queues.enqueue_refund(refund_id)
    except Exception as error:
        logger.exception("send to RefundsQueue failed", extra={"refund_id": refund_id})
        raise AwsTransientError(f"refund {refund_id} is stored but not yet sent to its worker: retry the same "
                                "request") from error


def as_accepted(item: dict[str, Any]) -> RefundView:
    """The answer to the POST: the refund as accepted (PENDING), whatever happened since (replays match it)."""
    return RefundView(refund_id=item["refund_id"], payment_order_id=item["payment_order_id"],
                      status=REFUND_PENDING, amount=Money(int(item["amount_minor"]), item["currency"]).to_major(),
                      currency=item["currency"], reason=item.get("reason"), created_at=item["created_at"],
                      updated_at=item["created_at"])


def refund_view(item: dict[str, Any]) -> RefundView:
    currency = item["currency"]

    def major(field: str) -> str | None:
        return Money(int(item[field]), currency).to_major() if item.get(field) is not None else None

    reversal = None
    if item.get("reversal_status"):
        reversal = ReversalView(id=item.get("reversal_id") or None, status=item["reversal_status"],
                                failure_code=item.get("reversal_code") or None)
    return RefundView(
        refund_id=item["refund_id"], payment_order_id=item["payment_order_id"], status=item["refund_status"],
        amount=Money(int(item["amount_minor"]), currency).to_major(), currency=currency, reason=item.get("reason"),
        psp_refund_id=item.get("psp_refund_id"), timing=item.get("timing"), seller_share=major("seller_share_minor"),
        commission_share=major("commission_share_minor"), reversal=reversal, failure_code=item.get("failure_code"),
        failure_reason=item.get("failure_reason"), created_at=item["created_at"], updated_at=item.get("updated_at"))


def get_refund(refund_id: str) -> RefundView:
    item = RefundsTable.from_settings().get(refund_id)
    if item is None:
        raise NotFound(f"refund {refund_id} not found", code="refund_not_found")
    return refund_view(item)


def order_refund_fields(order: dict[str, Any]) -> dict[str, Any]:
    """What GET /v1/payments/{id} shows of the order's refunds (none: nothing added)."""
    ids = sorted(order.get("refund_ids") or ())
    if not ids:
        return {}
    found = RefundsTable.from_settings().get_many(ids)
    currency = order["currency"]
    return {"refunded": Money(int(order.get("refunded_minor") or 0), currency).to_major(),
            "refunds": [RefundSummary(refund_id=i, status=found[i]["refund_status"],
                                      amount=Money(int(found[i]["amount_minor"]), currency).to_major())
                        for i in sorted(found, key=lambda i: (found[i]["created_at"], i))]}
