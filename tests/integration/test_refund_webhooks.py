"""Refund webhooks wired to the refund path, on moto and the PSP sandbox (the unmodified stripe SDK): the sandbox
emits Stripe's refund events and settles a pending refund on its own clock; the processor hands them to
apply_psp_refund. A pending refund is finished by its event before the worker's poll; duplicated and reordered
events end in the right state; our own reversals are not sent to review; a refund's SUCCEEDED reaches the
notification receiver."""

import json
import time

import boto3

from functions.executor import refund as worker
from functions.notify import notifier
from functions.shared.config import reload_settings, settings
from functions.shared.tables import LedgerTable, PaymentTables, RefundsTable
from functions.webhooks import processor
from local.streams import stream_event
from tests.integration.test_notifications import (
    REGION,
    receive,
    receiver,  # noqa: F401 - the fixture
    run_deliverer,
)
from tests.integration.test_refunds import invariants_hold, refund, transferred_order, usd
from tests.integration.test_transfer import FakeContext, paid_order, transfers_of
from tests.support.aws import drain


def events_of(sandbox, *types):
    """The sandbox's events (Stripe JSON, as the receiver queues them), oldest first, of `types` if given."""
    events = [e.to_stripe() for e in sandbox.sandbox.webhooks.events.values()]
    return [json.dumps(e) for e in events if not types or e["type"] in types]


def settled(sandbox, timeout_s=5.0):
    """Wait for the sandbox's own settler to decide every pending refund (it sends the events)."""
    deadline = time.monotonic() + timeout_s
    while any(r.status == "pending" for r in sandbox.state.refunds.values()):
        assert time.monotonic() < deadline, "the sandbox did not settle its pending refund"
        time.sleep(0.05)


def review_messages():
    return [json.loads(body) for body in drain(settings().review_queue_url)]


def test_the_sandbox_emits_stripes_refund_events(sandbox):
    order_id = paid_order()
    sandbox.state.refund_pending_seconds = 1
    refund(order_id, amount="5.00")
    assert worker.drive("rf_1") == "pending"
    settled(sandbox)
    refund_events = [json.loads(e) for e in events_of(sandbox, "refund.created", "charge.refunded",
                                                      "refund.updated", "charge.refund.updated")]
    assert [(e["type"], e["data"]["object"].get("status")) for e in refund_events] == [
        ("refund.created", "pending"), ("charge.refunded", "succeeded"), ("refund.updated", "succeeded"),
        ("charge.refund.updated", "succeeded")]
    assert refund_events[1]["data"]["object"]["amount_refunded"] == 500
    assert refund_events[2]["data"]["object"]["metadata"]["refund_id"] == "rf_1"


def test_a_pending_refund_is_finished_by_its_event_before_the_workers_poll(sandbox):
    order_id = paid_order()
    sandbox.state.refund_pending_seconds = 1
    refund(order_id, amount="5.00")
    drain(settings().refunds_queue_url)
    assert worker.drive("rf_1") == "pending"  # the poll is queued 300 s out; it never runs in this test
    drain(settings().refunds_queue_url)
    settled(sandbox)

    outcomes = [processor.process(body) for body in events_of(sandbox)]
    assert "succeeded" in outcomes and "not_final" in outcomes  # refund.created (pending): left to the poll
    stored = RefundsTable.from_settings().get("rf_1")
    assert (stored["refund_status"], stored["timing"], stored["books_applied"]) == ("SUCCEEDED", "held", True)
    assert stored.get("finished_at")
    assert usd()["pending_minor"] == 734
    assert LedgerTable.from_settings().get("refund#rf_1") is not None
    assert drain(settings().refunds_queue_url) == []  # the events queued no second poll chain
    assert worker.drive("rf_1") == "succeeded"  # the poll, when it comes, changes nothing
    invariants_hold()


def test_duplicated_and_reordered_events_after_the_transfer_end_reversed_once_and_not_in_review(sandbox):
    order_id, _ = transferred_order(sandbox)
    sandbox.state.refund_pending_seconds = 1
    refund(order_id, amount="5.00")
    assert worker.drive("rf_1") == "pending"
    settled(sandbox)
    drain(settings().review_queue_url)

    bodies = events_of(sandbox, "refund.created", "charge.refunded", "refund.updated", "charge.refund.updated")
    for body in [*reversed(bodies), *bodies]:  # newest first, then all again (duplicates by id)
        processor.process(body)
    # The reversal made by the event's path carries our refund id, so its transfer.reversed is not a discrepancy.
    [reversed_event] = events_of(sandbox, "transfer.reversed")
    reversal = json.loads(reversed_event)["data"]["object"]["reversals"]["data"][0]
    assert reversal["metadata"] == {"refund_id": "rf_1"}
    assert processor.process(reversed_event) == "booked_by_refund_path"
    assert review_messages() == []

    stored = RefundsTable.from_settings().get("rf_1")
    assert (stored["refund_status"], stored["timing"], stored["reversal_status"]) == ("SUCCEEDED", "transferred",
                                                                                    "SUCCEEDED")
    [sent] = transfers_of(sandbox, order_id)
    assert sent.amount_reversed == 450 and len(sent.reversals) == 1
    assert worker.drive("rf_1") == "succeeded"
    assert usd() == {"pending_minor": 0, "available_minor": 0, "transferred_minor": 1111, "owed_minor": 0}
    invariants_hold()


def test_a_failed_refunds_events_in_any_order_fail_it_once_and_give_the_reservation_back(sandbox):
    order_id = paid_order()
    sandbox.state.refund_pending_seconds = 1
    view, _ = refund(order_id, amount="5.00", reason="requested_by_customer")
    assert worker.drive("rf_1") == "pending"
    [made] = sandbox.state.refunds.values()
    sandbox.state.resolve_refund(made.id, "failed")

    bodies = events_of(sandbox, "refund.created", "refund.updated", "charge.refund.updated", "refund.failed")
    assert [json.loads(b)["type"] for b in bodies][-1] == "refund.failed"
    outcomes = [processor.process(body) for body in reversed(bodies)]
    assert outcomes == ["failed", "failed", "failed", "not_final"]
    stored = RefundsTable.from_settings().get("rf_1")
    assert (stored["refund_status"], stored["failure_code"]) == ("FAILED", "expired_or_canceled_card")
    assert PaymentTables.from_settings().get_order(order_id)["refunded_minor"] == 0
    assert usd()["pending_minor"] == 1234


def test_a_refund_stripe_fails_after_calling_it_succeeded_stays_refunded_and_goes_to_review(sandbox):
    order_id = paid_order()
    refund(order_id, amount="5.00")
    assert worker.drive("rf_1") == "succeeded"
    [made] = sandbox.state.refunds.values()
    obj = {"id": made.id, "object": "refund", "status": "failed", "amount": 500, "currency": "usd",
           "metadata": {"refund_id": "rf_1"}, "failure_reason": "lost_or_stolen_card"}
    body = json.dumps({"id": "evt_late_fail", "object": "event", "type": "refund.failed", "created": 2,
                       "data": {"object": obj}})
    assert processor.process(body) == "failed_after_success"
    assert RefundsTable.from_settings().get("rf_1")["refund_status"] == "SUCCEEDED"  # never moved backwards
    [message] = review_messages()
    assert (message["category"], message["psp_refund_id"]) == ("refund_failed_after_success", made.id)
    invariants_hold()


def test_a_refund_that_names_none_of_ours_goes_to_review_once(sandbox):
    obj = {"id": "re_dashboard", "object": "refund", "status": "succeeded", "amount": 700, "currency": "usd",
           "metadata": {}, "charge": "ch_x", "payment_intent": "pi_x"}
    body = json.dumps({"id": "evt_x", "object": "event", "type": "charge.refund.updated", "created": 1,
                       "data": {"object": obj}})
    assert processor.process(body) == "review"
    [message] = review_messages()
    assert (message["category"], message["amount_minor"], message["currency"]) == ("refund_not_ours", 700, "USD")
    assert processor.process(body) == "duplicate"


def test_a_refunds_succeeded_reaches_the_notification_receiver(sandbox, receiver, monkeypatch):  # noqa: F811
    from functions.notify.endpoints import EndpointRequest, set_endpoint

    db, sqs = boto3.client("dynamodb", region_name=REGION), boto3.client("sqs", region_name=REGION)
    db.create_table(TableName="test-NotificationEndpoints", BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "client_id", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "client_id", "AttributeType": "S"}])
    stream_arn = db.update_table(
        TableName=settings().refunds_table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]["LatestStreamArn"]
    queue = sqs.create_queue(QueueName="test-NotificationsQueue")["QueueUrl"]
    dlq = sqs.create_queue(QueueName="test-NotificationsDlq")["QueueUrl"]
    for name, value in {"NOTIFICATION_ENDPOINTS_TABLE": "test-NotificationEndpoints",
                        "NOTIFICATIONS_QUEUE_URL": queue, "NOTIFICATIONS_DLQ_URL": dlq}.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    set_endpoint(EndpointRequest(url=receiver.url, secret=receiver.secret))

    order_id = paid_order()
    refund(order_id, amount="5.00")
    assert worker.drive("rf_1") == "succeeded"

    streams = boto3.client("dynamodbstreams", region_name=REGION,
                           endpoint_url=f"https://streams.dynamodb.{REGION}.amazonaws.com")
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert notifier.handler(stream_event(records, stream_arn), FakeContext()) == {"batchItemFailures": []}
    assert run_deliverer(None, receive(queue)) == {"batchItemFailures": []}

    assert not receiver.refused
    assert [e["type"] for e in receiver.events] == ["refund.pending", "refund.succeeded"]
    succeeded = receiver.events[1]
    assert succeeded["data"]["object"]["refund_id"] == "rf_1"
    assert (succeeded["data"]["object"]["amount"], succeeded["data"]["previous_status"]) == ("5.00", "PENDING")
