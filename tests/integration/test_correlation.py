"""The correlation id stored with the checkout: on its orders and charges, on the orders-queue message, carried
by every attempt's workflow input, and the same in the PaymentIntent's metadata whatever the retries."""

import json

import boto3

from functions.executor import handler as executor
from functions.notify import events
from functions.payment import api
from functions.shared import clock
from functions.shared.config import settings
from functions.shared.models import ChargeWork
from functions.shared.tables import PaymentTables, to_item
from tests.integration.support import work_of
from tests.support.events import FakeContext, http_event

CORRELATION_ID = "shop-req-0001"


def post(checkout_id, correlation_id=CORRELATION_ID):
    body = {"buyer_info": {"buyer_id": "b"}, "checkout_id": checkout_id,
            "credit_card_info": {"payment_method": "pm_card_visa"},
            "payment_orders": [{"seller_account": "seller", "amount": "3.00", "currency": currency,
                                "payment_order_id": f"{checkout_id}_{currency}"} for currency in ("USD", "EUR")]}
    event = http_event("POST", "/v1/payments", body)
    event["headers"] = {**event.get("headers", {}), "x-correlation-id": correlation_id}
    return api.handler(event, FakeContext())


def test_the_checkout_its_orders_charges_and_messages_keep_the_request_id(aws_env):
    answer = post("chk_c")
    assert answer["statusCode"] == 202 and answer["headers"]["X-Correlation-Id"] == CORRELATION_ID
    tables = PaymentTables.from_settings()
    assert tables.get_checkout("chk_c")["correlation_id"] == CORRELATION_ID
    for currency in ("USD", "EUR"):
        assert tables.get_order(f"chk_c_{currency}")["correlation_id"] == CORRELATION_ID
        assert work_of("chk_c", currency).correlation_id == CORRELATION_ID
    sqs = boto3.client("sqs", region_name="us-east-1")
    messages = sqs.receive_message(QueueUrl=settings().orders_queue_url, MaxNumberOfMessages=10,
                                   MessageAttributeNames=["All"])["Messages"]
    assert len(messages) == 2
    assert {m["MessageAttributes"]["correlation_id"]["StringValue"] for m in messages} == {CORRELATION_ID}
    # a replay with another id is the same checkout: what was stored stays
    again = post("chk_c", correlation_id="shop-req-0002")
    assert again["headers"]["X-Correlation-Id"] == "shop-req-0002"
    assert tables.get_checkout("chk_c")["correlation_id"] == CORRELATION_ID


def test_every_attempt_sends_the_same_metadata_so_the_psp_replays(sandbox):
    post("chk_r")
    tables = PaymentTables.from_settings()
    tables.begin_charge_attempt("chk_r#USD", 1, clock.iso(), clock.iso())
    first = executor.execute(work_of("chk_r"))
    # a later attempt, rebuilt from the stored charge as the sweeper does, without the reference it recorded
    charge = {k: v for k, v in tables.get_charge("chk_r#USD").items() if k != "psp_reference"}
    second = executor.execute(ChargeWork.from_charge_item(charge, attempt=2))
    assert first.psp_reference == second.psp_reference
    [intent] = [c for c in sandbox.charges() if c["metadata"].get("checkout_id") == "chk_r"]
    assert intent["metadata"] == {"checkout_id": "chk_r", "charge_key": "chk_r#USD", "correlation_id": CORRELATION_ID}


def test_an_orders_notification_carries_it(aws_env):
    post("chk_n")
    order = PaymentTables.from_settings().get_order("chk_n_USD")
    record = {"eventName": "INSERT", "dynamodb": {"NewImage": to_item(order)}}
    source = next(s for s in events.SOURCES if s.name == "payment_order")
    assert events.event_of(record, source)["correlation_id"] == CORRELATION_ID
    assert "correlation_id" not in json.dumps(events.event_of(record, source)["data"])
