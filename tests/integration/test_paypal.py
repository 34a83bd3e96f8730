"""PayPal through Stripe (issue 17 point 4), through the workflow's steps, against moto and the PSP sandbox.

The storefront sends a PayPal PaymentMethod (as Stripe.js creates it) and its return_url. The PaymentIntent answers
requires_action with a redirect: the orders stay EXECUTING and show next_action {redirect_to_url, url, return_url}
until the approval's deadline. The buyer approving or cancelling on PayPal's page is the sandbox's resolve call;
the webhook brings the charge forward and the usual finalize decides. Past the deadline the charge is cancelled.
"""

import json

import boto3
import pytest

from functions.executor import sweeper
from functions.payment import service
from functions.payment.schemas import PaymentRequest
from functions.shared import clock, psp
from functions.shared.config import settings
from functions.shared.tables import PaymentTables, PayoutsTable
from functions.webhooks import processor
from psp_sandbox.catalogue import PAYPAL
from psp_sandbox.errors import StripeApiError
from tests.integration.support import work_of
from tests.integration.test_executor_checkout import begin, run_charge
from tests.integration.test_steps import create_machine

RETURN_URL = "https://shop.example/checkout/return"


@pytest.fixture
def workflow(sandbox):
    create_machine(boto3.client("stepfunctions", region_name="us-east-1"))
    return sandbox


def paypal_request(checkout_id, token, orders=(("seller_a", "12.34", "EUR"), ("seller_b", "5.00", "EUR")), **method):
    return PaymentRequest.model_validate({
        "buyer_info": {"buyer_id": "b"}, "checkout_id": checkout_id,
        "payment_method": {"type": "paypal", "token": token, "return_url": RETURN_URL, **method},
        "payment_orders": [{"seller_account": seller, "amount": amount, "currency": currency,
                            "payment_order_id": f"{checkout_id}_{n}"}
                           for n, (seller, amount, currency) in enumerate(orders)]})


def redirected(server, checkout_id):
    """A checkout paid with PayPal, its first attempt run: parked on requires_action (the redirect)."""
    pm = server.state.create_payment_method(card=PAYPAL, exp_month=None, exp_year=None, metadata={},
                                            billing_details={})
    service.place_checkout(paypal_request(checkout_id, pm.id))
    result = run_charge(begin(checkout_id, "EUR"))
    assert result == {"charge_status": "EXECUTING", "psp_status": "requires_action"}
    return PaymentTables.from_settings().get_charge(f"{checkout_id}#EUR")["psp_reference"]


def delivered(server, pi_id, event_type):
    [event] = [e for e in server.sandbox.webhooks.events.values() if e.type == event_type and e.obj.get("id") == pi_id]
    return json.dumps(event.to_stripe())


def redrive(checkout_id):
    assert sweeper.sweep()["redriven"] == 1
    charge = PaymentTables.from_settings().get_charge(f"{checkout_id}#EUR")
    return run_charge(work_of(checkout_id, "EUR", attempt=int(charge["attempts"])))


def orders_of(checkout_id):
    tables = PaymentTables.from_settings()
    return [tables.get_order(f"{checkout_id}_{n}") for n in range(2)]


def test_the_buyer_is_sent_to_paypal_and_back_to_the_storefront(workflow):
    pi_id = redirected(workflow, "chk_pp")
    intent = workflow.state.to_json(workflow.state.payment_intent(pi_id))
    assert intent["payment_method_types"] == ["paypal"]
    url = intent["next_action"]["redirect_to_url"]["url"]
    checkout = service.get_checkout("chk_pp")
    assert checkout.next_action.model_dump(exclude_none=True) == {
        "type": "redirect_to_url", "url": url, "return_url": RETURN_URL}
    assert [o.payment_order_status for o in checkout.payment_orders] == ["EXECUTING", "EXECUTING"]
    clock.advance(settings().threeds_timeout_s - 60)  # not polled while the buyer is on PayPal's page
    assert sweeper.sweep()["redriven"] == 0


def test_an_approved_payment_succeeds_with_wallet_ledger_and_payout(workflow):
    pi_id = redirected(workflow, "chk_ok")
    workflow.state.resolve_payment_intent(pi_id, "succeeded")  # the buyer approves on PayPal's page
    assert processor.process(delivered(workflow, pi_id, "payment_intent.succeeded")) == "redrive_due"
    assert redrive("chk_ok")["charge_status"] == "SUCCESS"
    for order in orders_of("chk_ok"):
        assert (order["payment_order_status"], order["wallet_updated"], order["ledger_updated"]) == (
            "SUCCESS", True, True)
        assert "next_action" not in order
        assert PayoutsTable.from_settings().get(order["payment_order_id"])["payout_status"] == "HELD"
    charge = workflow.state.charge(workflow.state.payment_intent(pi_id).latest_charge)
    assert workflow.state.to_json(charge)["payment_method_details"]["type"] == "paypal"


def test_a_payment_the_buyer_cancels_on_paypal_ends_failed_and_the_intent_is_closed(workflow):
    pi_id = redirected(workflow, "chk_no")
    workflow.state.resolve_payment_intent(pi_id, "failed")
    assert processor.process(delivered(workflow, pi_id, "payment_intent.payment_failed")) == "redrive_due"
    assert redrive("chk_no")["charge_status"] == "FAILED"
    assert {(o["payment_order_status"], o["failure_code"]) for o in orders_of("chk_no")} == {
        ("FAILED", "payment_intent_payment_attempt_failed")}
    assert workflow.state.payment_intent(pi_id).status == "canceled"  # cannot be confirmed again


def test_an_approval_never_given_is_cancelled_at_the_deadline(workflow):
    pi_id = redirected(workflow, "chk_gone")
    clock.advance(settings().threeds_timeout_s + 1)
    assert redrive("chk_gone")["charge_status"] == "FAILED"
    assert workflow.state.payment_intent(pi_id).status == "canceled"
    assert {o["failure_code"] for o in orders_of("chk_gone")} == {psp.AUTHENTICATION_ABANDONED}


@pytest.mark.parametrize(("method", "orders", "code"), [
    ({"return_url": None}, None, "return_url_missing"),
    ({"return_url": "http://shop.example/back"}, None, "string_pattern_mismatch"),
    ({"wallet": "apple_pay"}, None, "wallet_not_allowed"),
    ({}, (("seller_a", "500", "JPY"),), "payment_method_currency_not_supported"),
    ({}, (("seller_a", "5.00", "EUR"), ("seller_b", "5.00", "USD")), "payment_method_single_currency"),
])
def test_what_paypal_cannot_take_is_refused_before_anything_is_stored(method, orders, code):
    body = {"type": "paypal", "token": "pm_1", "return_url": RETURN_URL, **method}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(ValueError) as refused:
        PaymentRequest.model_validate({
            "buyer_info": {"buyer_id": "b"}, "checkout_id": "chk_x", "payment_method": body,
            "payment_orders": [{"seller_account": s, "amount": a, "currency": c, "payment_order_id": f"o{n}"}
                               for n, (s, a, c) in enumerate(orders or (("seller_a", "5.00", "EUR"),))]})
    assert code in {e["type"] for e in refused.value.errors()}


def test_a_card_checkout_may_not_carry_a_return_url():
    with pytest.raises(ValueError, match="return_url_not_allowed|only a redirect method"):
        PaymentRequest.model_validate({
            "buyer_info": {"buyer_id": "b"}, "checkout_id": "chk_c",
            "payment_method": {"type": "card", "token": "pm_card_visa", "return_url": RETURN_URL},
            "payment_orders": [{"seller_account": "s", "amount": "5.00", "currency": "EUR",
                                "payment_order_id": "o"}]})


def test_the_sandbox_refuses_what_stripe_refuses_for_paypal(workflow):
    state = workflow.state
    pm = state.create_payment_method(card=PAYPAL, exp_month=None, exp_year=None, metadata={}, billing_details={})
    common = {"amount": 500, "metadata": {}, "automatic_payment_methods": None, "description": None,
              "customer": None, "transfer_group": None, "confirm": True, "idempotency_key": None}
    with pytest.raises(StripeApiError, match="not allowed for this PaymentIntent"):  # a card-only PaymentIntent
        state.create_payment_intent(currency="eur", payment_method=pm.id, payment_method_types=["card"], **common)
    with pytest.raises(StripeApiError, match="currency provided"):
        state.create_payment_intent(currency="jpy", payment_method=pm.id, payment_method_types=["paypal"], **common)
    with pytest.raises(StripeApiError, match="return_url"):
        state.create_payment_intent(currency="eur", payment_method=pm.id, payment_method_types=["paypal"], **common)
