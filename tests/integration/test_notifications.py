"""Notifications out on moto: a stream record -> NotificationsQueue -> a signed POST to a receiver; a receiver
that is down -> retried with growing waits -> dead-lettered once 3 days have passed (functions/shared/clock)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from functions.notify import deliverer, notifier
from functions.notify.endpoints import CreatedEndpointView, EndpointRequest, get_endpoint, set_endpoint
from functions.shared import clock
from functions.shared.config import reload_settings
from functions.shared.errors import NotFound
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables, to_item
from local.event_sources import sqs_event
from local.notification_receiver import Receiver
from local.streams import stream_event
from tests.integration.test_transfer import FakeContext

REGION = "us-east-1"


@pytest.fixture
def notify_env(aws_env, monkeypatch):
    """The endpoints table and the two queues, and the orders table's stream switched on (as the stack does)."""
    db = boto3.client("dynamodb", region_name=REGION)
    db.create_table(TableName="test-NotificationEndpoints", BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "client_id", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "client_id", "AttributeType": "S"}])
    stream_arn = db.update_table(
        TableName=aws_env["PAYMENT_ORDERS_TABLE"],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]["LatestStreamArn"]
    sqs = boto3.client("sqs", region_name=REGION)
    env = {"NOTIFICATION_ENDPOINTS_TABLE": "test-NotificationEndpoints",
           "NOTIFICATIONS_QUEUE_URL": sqs.create_queue(QueueName="test-NotificationsQueue")["QueueUrl"],
           "NOTIFICATIONS_DLQ_URL": sqs.create_queue(QueueName="test-NotificationsDlq")["QueueUrl"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    return {**aws_env, **env, "stream_arn": stream_arn}


@pytest.fixture
def receiver():
    running = Receiver("mpsec_" + "0" * 48).start()
    yield running
    running.stop()


def order_item(status="NOT_STARTED"):
    now = clock.iso()
    return {"payment_order_id": "po_n1", "checkout_id": "chk_n1", "seller_account": "seller_a", "amount_minor": 1234,
            "currency": "USD", "charge_key": "chk_n1#USD", "payment_method": "pm_card_visa", "psp": "stripe",
            "payment_order_status": status, "wallet_updated": False, "ledger_updated": False, "created_at": now,
            "updated_at": now}


def stream_records(env):
    # The plain regional endpoint: botocore's ARN-derived endpoint for DescribeStream is not one moto serves.
    streams = boto3.client("dynamodbstreams", region_name=REGION,
                           endpoint_url=f"https://streams.dynamodb.{REGION}.amazonaws.com")
    shard = streams.describe_stream(StreamArn=env["stream_arn"])["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=env["stream_arn"], ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return streams.get_records(ShardIterator=iterator)["Records"]


def receive(queue_url, visibility=30):
    answer = boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=visibility)
    return answer.get("Messages", [])


def run_deliverer(env, messages):
    return deliverer.handler(sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:test-NotificationsQueue"),
                             FakeContext())


def test_an_order_status_change_reaches_the_receiver_signed_once_per_change(notify_env, receiver):
    # Given an endpoint, and an order placed then moved to EXECUTING and to SUCCESS in its table
    view, created = set_endpoint(EndpointRequest(url=receiver.url, secret=receiver.secret))
    assert created and not isinstance(view, CreatedEndpointView)  # a given secret is never echoed
    tables = PaymentTables.from_settings()
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=notify_env["PAYMENT_ORDERS_TABLE"],
        Item=to_item(order_item()))
    tables.mark_orders_executing(["po_n1"], clock.iso())
    tables.mark_orders_executing(["po_n1"], clock.iso())  # again: its condition writes nothing
    tables.finish("po_n1", OrderStatus.SUCCESS, {"psp_reference": "pi_n1"}, clock.iso())

    # When the Notifier reads the stream (twice: a redelivery) and the Deliverer the queue
    records = stream_records(notify_env)
    assert len(records) == 3
    event = stream_event(records, notify_env["stream_arn"])
    assert notifier.handler(event, FakeContext()) == {"batchItemFailures": []}
    assert notifier.handler(event, FakeContext()) == {"batchItemFailures": []}
    messages = receive(notify_env["NOTIFICATIONS_QUEUE_URL"])
    assert len(messages) == 6  # three changes, queued twice
    assert run_deliverer(notify_env, messages) == {"batchItemFailures": []}

    # Then the receiver verified three distinct events (each twice: same id), the last one SUCCESS
    assert not receiver.refused
    types = sorted({(e["id"], e["type"]) for e in receiver.events}, key=lambda pair: pair[1])
    assert [t for _, t in types] == ["payment_order.executing", "payment_order.not_started",
                                     "payment_order.success"]
    success = next(e for e in receiver.events if e["type"] == "payment_order.success")
    assert success["data"]["object"]["amount"] == "12.34"
    assert success["data"]["object"]["psp_reference"] == "pi_n1"
    assert success["data"]["previous_status"] == "EXECUTING"
    assert "pm_card_visa" not in json.dumps(receiver.events)


def test_a_receiver_that_is_down_is_retried_with_growing_waits_then_dead_lettered_after_3_days(notify_env, receiver):
    set_endpoint(EndpointRequest(url=receiver.url, secret=receiver.secret))
    receiver.status = 503
    event = {"id": "evt_down", "object": "event", "type": "payment_order.success", "created": clock.iso(),
             "data": {"object": {"payment_order_id": "po_x"}, "previous_status": "EXECUTING"}}
    sqs = boto3.client("sqs", region_name=REGION)
    queue = notify_env["NOTIFICATIONS_QUEUE_URL"]
    sqs.send_message(QueueUrl=queue, MessageBody=notifier.message_body(event))

    waits = []
    for _ in range(6):
        (message,) = receive(queue)
        delivery = deliverer.Delivery.of(sqs_event([message], "arn")["Records"][0])
        result = deliverer.deliver(delivery, {"url": receiver.url, "secret": receiver.secret},
                                   deliverer.settings())
        assert result.outcome is deliverer.Outcome.RETRY
        waits.append(result.retry_in_s)
        assert receive(queue) == []  # hidden for its wait
        sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    assert all(a < b for a, b in zip(waits, waits[1:], strict=False)), waits
    assert receiver.attempts == 6 and receiver.events == []

    # 3 days later the next failure dead-letters the event (with the alarm on NotificationsDlq) and deletes it
    clock.advance(3 * 86400)
    (message,) = receive(queue)
    assert run_deliverer(notify_env, [message]) == {"batchItemFailures": []}
    (dead,) = [json.loads(m["Body"]) for m in receive(notify_env["NOTIFICATIONS_DLQ_URL"])]
    # (the receiver now refuses the signature too: its clock did not move 3 days)
    assert dead["event_id"] == "evt_down" and dead["error"].startswith("HTTP ") and dead["attempts"] == 7
    assert receive(queue, visibility=0) == []


def test_the_last_wait_stops_at_the_end_of_the_window(notify_env, receiver):
    set_endpoint(EndpointRequest(url=receiver.url, secret=receiver.secret))
    receiver.status = 500
    event = {"id": "evt_late", "type": "payout.released", "data": {"object": {}}}
    boto3.client("sqs", region_name=REGION).send_message(QueueUrl=notify_env["NOTIFICATIONS_QUEUE_URL"],
                                                         MessageBody=notifier.message_body(event))
    clock.advance(3 * 86400 - 100)
    (message,) = receive(notify_env["NOTIFICATIONS_QUEUE_URL"])
    result = deliverer.deliver(deliverer.Delivery.of(sqs_event([message], "arn")["Records"][0]),
                               {"url": receiver.url, "secret": receiver.secret}, deliverer.settings())
    assert result.outcome is deliverer.Outcome.RETRY and result.retry_in_s <= 101


def test_endpoint_put_generates_a_secret_once_and_get_never_shows_it(notify_env):
    with pytest.raises(NotFound):
        get_endpoint()
    first, created = set_endpoint(EndpointRequest(url="https://shop.example/hooks"))
    assert created and first.secret.startswith("mpsec_")
    again, created = set_endpoint(EndpointRequest(url="https://shop.example/v2/hooks"))
    assert not created and not isinstance(again, CreatedEndpointView)
    shown = get_endpoint()
    assert shown.url == "https://shop.example/v2/hooks" and "secret" not in shown.model_dump()


def test_no_endpoint_drops_the_event(notify_env):
    event = {"id": "evt_none", "type": "payout.held", "data": {"object": {}}}
    boto3.client("sqs", region_name=REGION).send_message(QueueUrl=notify_env["NOTIFICATIONS_QUEUE_URL"],
                                                         MessageBody=notifier.message_body(event))
    messages = receive(notify_env["NOTIFICATIONS_QUEUE_URL"])
    assert run_deliverer(notify_env, messages) == {"batchItemFailures": []}
    assert receive(notify_env["NOTIFICATIONS_DLQ_URL"]) == []


def redirecting_to(target: str) -> ThreadingHTTPServer:
    """An endpoint that answers every POST with 307 (method and body kept by a client that follows it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(307)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_redirect_is_a_failed_delivery_and_never_followed(notify_env, receiver):
    # A receiver that redirects (to an internal address, say) gets no second request from us: an SSRF stops here
    redirector = redirecting_to(receiver.url)
    url = f"http://127.0.0.1:{redirector.server_address[1]}/hooks"
    event = {"id": "evt_redirect", "object": "event", "type": "payment_order.success", "created": clock.iso(),
             "data": {"object": {"payment_order_id": "po_x"}, "previous_status": "EXECUTING"}}
    delivery = deliverer.Delivery.of(sqs_event([{"MessageId": "m", "ReceiptHandle": "r", "MD5OfBody": "",
                                                 "Body": notifier.message_body(event)}], "arn")["Records"][0])
    try:
        error = deliverer.post(url, receiver.secret, delivery, 5)
    finally:
        redirector.shutdown()
        redirector.server_close()

    assert error == "HTTP 307"
    assert receiver.attempts == 0


def test_an_order_of_another_client_reaches_that_clients_endpoint_with_its_own_ids_never_defaults(notify_env):
    from tests.integration.test_tenancy import call

    # Given two endpoints, each set by its client through the API, and a third client with none
    default_receiver = Receiver("mpsec_" + "1" * 48).start()
    shop_receiver = Receiver("mpsec_" + "2" * 48).start()
    try:
        for client, running in (("default", default_receiver), ("shop_b", shop_receiver)):
            status, view, _ = call(client, "PUT", "/v1/notification_endpoint",
                                   {"url": running.url, "secret": running.secret})
            assert status == 201 and view["client_id"] == client
        assert call("shop_b", "GET", "/v1/notification_endpoint")[1]["url"] == shop_receiver.url
        assert call("shop_c", "GET", "/v1/notification_endpoint")[0] == 404

        # When an order of shop_b (stored under its internal ids) and one of shop_c succeed
        db = boto3.client("dynamodb", region_name=REGION)
        tables = PaymentTables.from_settings()
        for client in ("shop_b", "shop_c"):
            item = {**order_item(), "payment_order_id": f"{client}~po_n1", "checkout_id": f"{client}~chk_n1",
                    "seller_account": f"{client}~seller_a", "charge_key": f"{client}~chk_n1#USD"}
            db.put_item(TableName=notify_env["PAYMENT_ORDERS_TABLE"], Item=to_item(item))
            tables.mark_orders_executing([item["payment_order_id"]], clock.iso())
            tables.finish(item["payment_order_id"], OrderStatus.SUCCESS, {"psp_reference": "pi_n1"}, clock.iso())
        assert notifier.handler(stream_event(stream_records(notify_env), notify_env["stream_arn"]),
                                FakeContext()) == {"batchItemFailures": []}
        assert run_deliverer(notify_env, receive(notify_env["NOTIFICATIONS_QUEUE_URL"])) == {"batchItemFailures": []}

        # Then shop_b's endpoint heard of its order, with the ids shop_b sent, and the default's heard nothing
        assert not shop_receiver.refused
        assert sorted(e["type"] for e in shop_receiver.events) == [
            "payment_order.executing", "payment_order.not_started", "payment_order.success"]
        order = next(e for e in shop_receiver.events if e["type"] == "payment_order.success")["data"]["object"]
        assert (order["payment_order_id"], order["checkout_id"], order["seller_account"]) == (
            "po_n1", "chk_n1", "seller_a")
        assert "~" not in json.dumps(shop_receiver.events)
        assert default_receiver.events == [] and default_receiver.attempts == 0
    finally:
        default_receiver.stop()
        shop_receiver.stop()
