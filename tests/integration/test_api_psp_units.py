"""The API refuses what Stripe cannot charge: per order (unit, currency) and per charge, the sum of a currency."""

import json

import boto3
import pytest

from functions.payment import api
from tests.support.events import FakeContext, http_event


def place(*orders):
    body = {
        "buyer_info": {"buyer_id": "buyer_1"},
        "checkout_id": "chk_units",
        "credit_card_info": {"payment_method": "pm_card_visa"},
        "payment_orders": [{"seller_account": f"seller_{n}", "amount": amount, "currency": currency,
                            "payment_order_id": f"po_units_{n}"} for n, (amount, currency) in enumerate(orders)],
    }
    answer = api.handler(http_event("POST", "/v1/payments", body), FakeContext())
    return answer["statusCode"], json.loads(answer["body"])


def orders_written():
    return boto3.client("dynamodb", region_name="us-east-1").scan(TableName="test-PaymentOrders")["Count"]


def test_a_currency_total_below_stripes_minimum_is_422_although_it_is_two_orders(aws_env):
    status, answer = place(("0.20", "USD"), ("0.20", "USD"))
    assert status == 422, answer
    assert answer["error"]["code"] == "amount_below_psp_minimum"
    assert answer["error"]["details"] == [{
        "field": "payment_orders", "code": "amount_below_psp_minimum",
        "message": "USD total of the checkout: 0.40 USD is below Stripe's minimum charge of 0.50 USD"}]
    assert orders_written() == 0


def test_orders_below_the_minimum_pass_when_their_currency_total_reaches_it(aws_env):
    status, answer = place(("0.30", "USD"), ("0.30", "USD"))
    assert status == 202, answer
    assert [o["amount"] for o in answer["payment_orders"]] == ["0.30", "0.30"]
    assert orders_written() == 2


def test_each_currency_is_a_charge_of_its_own(aws_env):
    # 0.40 USD + 0.40 EUR is not one charge of 0.80: each currency must reach its own minimum.
    status, answer = place(("0.60", "USD"), ("0.40", "EUR"))
    assert status == 422 and answer["error"]["code"] == "amount_below_psp_minimum"
    assert answer["error"]["message"].startswith("payment_orders: EUR total of the checkout: 0.40 EUR")
    assert orders_written() == 0


def test_a_currency_total_above_stripes_maximum_is_422(aws_env):
    status, answer = place(("600000.00", "USD"), ("399999.99", "USD"))
    assert status == 202, answer  # exactly 999,999.99: Stripe's 8-digit maximum
    status, answer = place(("600000.00", "USD"), ("400000.00", "USD"))
    assert status == 422 and answer["error"]["code"] == "amount_above_psp_maximum"
    assert answer["error"]["details"][0]["field"] == "payment_orders"


@pytest.mark.parametrize(("orders", "code", "field"), [
    ([("1.234", "KWD")], "amount_not_supported_by_psp", "payment_orders[0]"),
    ([("1.230", "KWD"), ("0.105", "BHD")], "amount_not_supported_by_psp", "payment_orders[1]"),
    ([("10.000", "LYD")], "currency_not_supported_by_psp", "payment_orders[0]"),
    ([("49", "JPY")], "amount_below_psp_minimum", "payment_orders"),
])
def test_what_stripe_cannot_charge_is_422_with_its_code_and_field(aws_env, orders, code, field):
    status, answer = place(*orders)
    assert status == 422, answer
    assert answer["error"]["code"] == code
    assert answer["error"]["details"][0]["field"] == field
    assert orders_written() == 0


@pytest.mark.parametrize("orders", [[("1.230", "KWD")], [("100", "ISK")], [("50", "JPY")], [("175.00", "HUF")]])
def test_amounts_stripe_can_charge_are_accepted(aws_env, orders):
    status, answer = place(*orders)
    assert status == 202, answer
