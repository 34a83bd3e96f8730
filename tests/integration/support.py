"""Checkouts placed as the API places them, and the work of their charges, for the integration tests."""

from __future__ import annotations

import json

from functions.ledger import handler as ledger_handler
from functions.payment import finalize
from functions.payment.schemas import PaymentRequest
from functions.payment.service import place_checkout
from functions.shared import clock
from functions.shared.models import ChargeWork
from functions.shared.names import charge_key
from functions.shared.tables import PaymentTables
from functions.wallet import handler as wallet_handler
from tests.support.events import FakeContext

TWO_SELLERS_USD = (("seller_a", "12.34", "USD"), ("seller_b", "5.00", "USD"))


def place(checkout_id: str = "chk_1", orders: tuple[tuple[str, str, str], ...] = TWO_SELLERS_USD,
          card: str = "pm_card_visa") -> list[str]:
    """Place a checkout through the service; returns its order ids (<checkout_id>_<n>)."""
    request = PaymentRequest.model_validate({
        "buyer_info": {"buyer_id": "b"}, "checkout_id": checkout_id,
        "credit_card_info": {"payment_method": card},
        "payment_orders": [{"seller_account": seller, "amount": amount, "currency": currency,
                            "payment_order_id": f"{checkout_id}_{n}"}
                           for n, (seller, amount, currency) in enumerate(orders)],
    })
    place_checkout(request)
    return [f"{checkout_id}_{n}" for n in range(len(orders))]


def work_of(checkout_id: str, currency: str = "USD", attempt: int = 1) -> ChargeWork:
    charge = PaymentTables.from_settings().get_charge(charge_key(checkout_id, currency))
    assert charge is not None, (checkout_id, currency)
    return ChargeWork.from_charge_item(charge, attempt=attempt)


class AwsFault:
    """Make the process's boto3 client answer `operation` as AWS does when it says no (a ClientError with
    `code`, or a raised botocore exception), for the calls `when(params)` picks, `times` times."""

    def __init__(self, service: str, operation: str, *, code: str = "", reasons: list[str] | None = None,
                 exception: Exception | None = None, times: int = 1, when=lambda params: True):
        from functions.shared import aws

        self.client = aws.client(service)
        self.event = f"before-call.{service}.{operation}"
        self.code, self.reasons, self.exception, self.times, self.when = code, reasons, exception, times, when
        self.client.meta.events.register(self.event, self)

    def __call__(self, params, **_):
        if self.times <= 0 or not self.when(json.loads(params.get("body") or b"{}")):
            return None
        self.times -= 1
        if self.exception is not None:
            raise self.exception
        from botocore.awsrequest import AWSResponse

        parsed = {"Error": {"Code": self.code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        if self.reasons:
            parsed["CancellationReasons"] = [{"Code": reason} for reason in self.reasons]
        status = 500 if self.code == "InternalServerError" else 400
        return AWSResponse("https://dynamodb.us-east-1.amazonaws.com", status, {}, None), parsed

    def remove(self):
        self.client.meta.events.unregister(self.event, self)


def paid(checkout_id, orders=None, *, wallet=True, ledger=True):
    """A checkout through the workflow's steps: begun, wallet credited, ledger written, finalized SUCCESS; a
    step given as False died before it wrote anything (for the order ids it lists, or all)."""
    place(checkout_id, **({"orders": orders} if orders else {}))
    tables = PaymentTables.from_settings()
    charge = tables.begin_charge_attempt(f"{checkout_id}#USD", 1, clock.iso(), clock.iso())
    tables.mark_orders_executing([o["payment_order_id"] for o in charge["orders"]], clock.iso())
    work = work_of(checkout_id)
    for share in work.orders:
        if wallet is True or (wallet is not False and share.payment_order_id not in wallet):
            wallet_handler.credit_pending(work, share)
        if ledger is True or (ledger is not False and share.payment_order_id not in ledger):
            ledger_handler.record_payin(work, share)
    finalize.handler({**work.model_dump(), "charge": {"outcome": "succeeded", "psp_reference": f"pi_{checkout_id}",
                                                      "psp_status": "succeeded", "charge_id": f"ch_{checkout_id}"}},
                     FakeContext())
    return work
