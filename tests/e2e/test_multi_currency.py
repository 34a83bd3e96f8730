"""Issue 20: a checkout of several currencies paid with a single-use PaymentMethod, through HTTP only.

The token is made as Stripe.js makes it (`POST /v1/payment_methods` at the PSP with the publishable key): it pays
one PaymentIntent unless attached to a Customer, so the executor attaches it to one Customer of the checkout and
names that Customer on each currency's PaymentIntent. The stack of this module is started by tests/e2e/conftest.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from local.stack import LocalStack
from tests.e2e.test_http_flows import checkout_body, intents_of, unique, wait_final
from tests.support.waiting import wait_for
from verification.storefront import ApiClient, PaymentMethods

pytestmark = pytest.mark.xdist_group("e2e")

USD_USD_EUR = [("seller_21", "12.34", "USD"), ("seller_22", "5.00", "USD"), ("seller_23", "7.50", "EUR")]


def token(stack: LocalStack, number: str = "4242424242424242") -> str:
    assert stack.psp_url is not None
    return PaymentMethods(stack.psp_url).create(number)


def placed(stack: LocalStack, api: ApiClient, card: str, orders: list[tuple[str, str, str]]) -> dict[str, Any]:
    body = checkout_body(unique("chk_mc"), card=card, orders=orders)
    status, answer, _ = api.post_checkout(body)
    assert status == 202, answer
    return body


def customers_of(stack: LocalStack, checkout_id: str) -> list[Any]:
    assert stack.sandbox is not None
    return [c for c in stack.sandbox.state.customers.values() if c.metadata.get("checkout_id") == checkout_id]


def test_two_currencies_with_a_single_use_token_both_succeed_through_one_customer(stack, api):
    # Given a USD + EUR checkout paid with a token from POST /v1/payment_methods
    pm = token(stack)
    body = placed(stack, api, pm, USD_USD_EUR)
    checkout_id = body["checkout_id"]
    # Then every order succeeds
    orders = [wait_final(api, o["payment_order_id"]) for o in body["payment_orders"]]
    assert [o["payment_order_status"] for o in orders] == ["SUCCESS"] * 3, orders
    # through one Customer of the checkout, to which the token is attached and which both PaymentIntents name
    assert stack.sandbox is not None
    [customer] = customers_of(stack, checkout_id)
    assert stack.sandbox.state.payment_methods[pm].customer == customer.id
    intents = intents_of(stack, checkout_id)
    assert sorted((c["currency"], c["amount"], c["status"]) for c in intents) == [
        ("eur", 750, "succeeded"), ("usd", 1734, "succeeded")]
    assert {stack.sandbox.state.payment_intent(c["payment_intent"]).customer for c in intents} == {customer.id}
    checkout = wait_for(lambda: (c := api.get_checkout(checkout_id)[1]).get("is_payment_done") and c, 5,
                        "is_payment_done")
    assert len(checkout["payment_orders"]) == 3
    # And no function made an AWS call its role does not grant
    assert stack.ungranted_calls() == {}


def test_a_declined_single_use_token_fails_both_currencies_with_the_decline_code(stack, api):
    body = placed(stack, api, token(stack, "4000000000000002"), USD_USD_EUR)
    for sent in body["payment_orders"]:
        order = wait_final(api, sent["payment_order_id"])
        assert (order["payment_order_status"], order["failure_code"]) == ("FAILED", "generic_decline"), order
    assert sorted(c["status"] for c in intents_of(stack, body["checkout_id"])) == ["failed", "failed"]


def test_a_single_currency_checkout_with_a_token_makes_no_customer(stack, api):
    pm = token(stack)
    body = placed(stack, api, pm, USD_USD_EUR[:2])
    assert {wait_final(api, o["payment_order_id"])["payment_order_status"] for o in body["payment_orders"]} == {
        "SUCCESS"}
    assert stack.sandbox is not None
    assert customers_of(stack, body["checkout_id"]) == [] and stack.sandbox.state.payment_methods[pm].customer is None
