"""SQS pollers (batch size, partial failures, DLQ), S3 notifications and schedules, as the Lambda service runs them."""

import hashlib
import json
import time
from urllib.parse import unquote_plus

import pytest

from functions.shared import clock
from local.event_sources import failed_message_ids, rate_seconds, runs_locally, sqs_event


def _bodies(records):
    return sorted(r["body"] for r in records)


def _drain(sqs, url):
    found = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            return found
        found.extend(msgs)
        for m in msgs:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_sqs_mapping_respects_batch_size_and_partial_failures(toy_stack, calls):
    # Given a mapping with BatchSize 3, ReportBatchItemFailures, and a queue with maxReceiveCount 2
    sqs = toy_stack.client("sqs")
    queue, dlq = toy_stack.outputs["WorkQueueUrl"], toy_stack.outputs["WorkDlqUrl"]
    bodies = ["ok-1", "ok-2", "fail-1", "ok-3", "ok-4", "fail-2", "ok-5"]
    # When seven messages arrive, two of which the handler reports as failed
    sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)])
    # Then the two failures end in the DLQ after two receives each, and nothing else does
    dead = toy_stack.wait_until(lambda: _dlq_bodies(sqs, dlq, 2), timeout=15)
    assert dead == ["fail-1", "fail-2"]
    batches = [event["Records"] for name, event in calls if name == "batch"]
    assert all(1 <= len(b) <= 3 for b in batches)
    assert len(batches[0]) == 3  # batched, not one invocation per message
    delivered = [r["body"] for b in batches for r in b]
    for body in ("ok-1", "ok-2", "ok-3", "ok-4", "ok-5"):
        assert delivered.count(body) == 1, body  # successes were deleted after their batch
    assert delivered.count("fail-1") == delivered.count("fail-2") == 2
    counts = sorted(r["attributes"]["ApproximateReceiveCount"] for b in batches for r in b if r["body"] == "fail-1")
    assert counts == ["1", "2"]
    assert _drain(sqs, queue) == []


def _dlq_bodies(sqs, dlq, expected):
    attrs = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    if int(attrs["ApproximateNumberOfMessages"]) < expected:
        return None
    return sorted(m["Body"] for m in _drain(sqs, dlq))


def test_the_sqs_event_has_the_aws_shape(toy_stack, calls):
    sqs = toy_stack.client("sqs")
    queue = toy_stack.outputs["WorkQueueUrl"]
    sqs.send_message(
        QueueUrl=queue,
        MessageBody="ok-shape",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "test"}},
    )
    toy_stack.wait_until(lambda: [c for c in calls if c[0] == "batch"], timeout=10)
    (record,) = calls[0][1]["Records"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue_arn
    assert record["awsRegion"] == "us-east-1"
    assert record["body"] == "ok-shape"
    assert record["md5OfBody"] == hashlib.md5(b"ok-shape").hexdigest()
    assert record["messageAttributes"] == {
        "kind": {"stringValue": "test", "stringListValues": [], "binaryListValues": [], "dataType": "String"}
    }
    assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
        record["attributes"]
    )
    assert record["messageId"] and record["receiptHandle"]


def test_a_function_error_leaves_the_whole_batch_for_redelivery_then_the_dlq(toy_stack, calls):
    # Given a mapping without ReportBatchItemFailures whose function always raises
    sqs = toy_stack.client("sqs")
    sqs.send_message_batch(
        QueueUrl=toy_stack.outputs["FailQueueUrl"],
        Entries=[{"Id": "1", "MessageBody": "x"}, {"Id": "2", "MessageBody": "y"}],
    )
    # Then both messages are delivered maxReceiveCount (2) times and then moved to the DLQ
    dead = toy_stack.wait_until(lambda: _dlq_bodies(sqs, toy_stack.outputs["FailDlqUrl"], 2), timeout=15)
    assert dead == ["x", "y"]
    delivered = [r["body"] for name, e in calls if name == "always_fail" for r in e["Records"]]
    assert sorted(delivered) == ["x", "x", "y", "y"]


def test_a_failed_message_comes_back_when_its_visibility_timeout_has_passed_on_the_system_clock(toy_stack, calls):
    # Given a queue with ten minutes of visibility whose function always raises
    sqs = toy_stack.client("sqs")
    sqs.send_message(QueueUrl=toy_stack.outputs["SlowFailQueueUrl"], MessageBody="slow")

    def deliveries():
        return [e for name, e in calls if name == "always_fail" and e["Records"][0]["body"] == "slow"]

    toy_stack.wait_until(lambda: len(deliveries()) == 1, timeout=10)
    time.sleep(2.5)  # two receive rounds of the poller: moto keeps it invisible in real time
    assert len(deliveries()) == 1
    try:
        # When a simulation moves the clock past the ten minutes
        clock.advance(601)
        # Then it is delivered again at once, and ten minutes later, past maxReceiveCount (2), it is in the DLQ
        toy_stack.wait_until(lambda: len(deliveries()) == 2, timeout=10)
        clock.advance(601)
        assert toy_stack.wait_until(lambda: _dlq_bodies(sqs, toy_stack.outputs["SlowFailDlqUrl"], 1),
                                    timeout=15) == ["slow"]
    finally:
        clock.reset()


def test_duplicate_delivery_hook_delivers_each_batch_twice(toy_stack, calls):
    sqs = toy_stack.client("sqs")
    toy_stack.events.duplicate_delivery = True
    try:
        sqs.send_message(QueueUrl=toy_stack.outputs["WorkQueueUrl"], MessageBody="ok-twice")
        toy_stack.wait_until(lambda: len([c for c in calls if c[0] == "batch"]) >= 2, timeout=10)
    finally:
        toy_stack.events.duplicate_delivery = False
    first, second = (e["Records"] for name, e in calls if name == "batch")
    assert first == second  # same messageId and receipt handle: the same delivery, twice
    assert _drain(sqs, toy_stack.outputs["WorkQueueUrl"]) == []  # then deleted once


@pytest.mark.parametrize("bucket_output", ["InboxBucket", "CustomInboxBucket"])
def test_s3_put_under_incoming_reaches_the_queue(toy_stack, bucket_output):
    # InboxBucket: NotificationConfiguration on the bucket; CustomInboxBucket: CDK's Custom::S3BucketNotifications
    s3, sqs = toy_stack.client("s3"), toy_stack.client("sqs")
    bucket, queue = toy_stack.outputs[bucket_output], toy_stack.outputs["InboxQueueUrl"]
    _drain(sqs, queue)  # S3 sends an s3:TestEvent when the notification is configured, as AWS does
    s3.put_object(Bucket=bucket, Key="elsewhere/a.csv", Body=b"x")
    s3.put_object(Bucket=bucket, Key="incoming/stripe/2026-11-25.csv", Body=b"id,amount\n")
    messages = toy_stack.wait_until(lambda: _drain(sqs, queue), timeout=5)
    records = [r for m in messages for r in json.loads(m["Body"])["Records"]]
    # keys arrive URL-encoded (moto also encodes "/"): consumers must unquote_plus them, as on AWS
    assert [(r["eventName"], r["s3"]["bucket"]["name"], unquote_plus(r["s3"]["object"]["key"])) for r in records] == [
        ("ObjectCreated:Put", bucket, "incoming/stripe/2026-11-25.csv")
    ]


def test_schedule_rule_invokes_its_target_with_a_scheduled_event(toy_stack, calls):
    (answer,) = toy_stack.events.fire("TickRule")
    assert answer == {"ok": True}
    ((name, event),) = calls
    assert name == "tick"
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"][0].startswith("arn:aws:events:us-east-1:123456789012:rule/")
    assert toy_stack.runtime.invocations[-1].trigger == "schedule Scheduled Event"


def test_rate_expressions():
    assert rate_seconds("rate(1 minute)") == 60
    assert rate_seconds("rate(5 minutes)") == 300
    assert rate_seconds("rate(2 hours)") == 7200


def test_batch_item_failures_rules():
    ids = ["a", "b", "c"]
    assert failed_message_ids({"batchItemFailures": []}, ids) == set()
    assert failed_message_ids(None, ids) == set()
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "b"}]}, ids) == {"b"}
    # like Lambda: an identifier not in the batch, or a missing one, fails the whole batch
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "zz"}]}, ids) == set(ids)
    assert failed_message_ids({"batchItemFailures": [{}]}, ids) == set(ids)
    assert sqs_event([], "arn:aws:sqs:us-east-1:123456789012:q") == {"Records": []}


def test_schedule_timer_ticks_at_the_local_interval(toy_stack, calls):
    from local.event_sources import EventSources

    timer = EventSources(toy_stack.aws_url, [], toy_stack.events.schedules, schedule_interval=0.2)
    timer.start()
    try:
        toy_stack.wait_until(lambda: len([c for c in calls if c[0] == "tick"]) >= 2, timeout=5)
    finally:
        timer.stop()


def test_only_rate_schedules_tick_locally_a_nightly_cron_does_not():
    assert runs_locally("rate(1 minute)")
    assert not runs_locally("cron(30 2 * * ? *)")


def test_pollers_per_mapping_follow_its_maximum_concurrency_within_the_local_concurrency(toy_stack):
    # Given the toy template: FailMapping with ScalingConfig MaximumConcurrency 3, the others without one
    from local.event_sources import UNSCALED_POLLERS, EventSources, sqs_mappings

    mappings = {m.logical_id: m for m in sqs_mappings(toy_stack.deployed, toy_stack.aws_url)}
    assert mappings["FailMapping"].max_concurrency == 3
    assert mappings["WorkMapping"].max_concurrency == UNSCALED_POLLERS

    def pollers(per_function):
        sources = EventSources(toy_stack.aws_url, [mappings["FailMapping"], mappings["WorkMapping"]], [],
                               pollers_per_function=per_function)
        sources._poll = lambda mapping: sources._stop.wait()  # count the threads, poll nothing
        sources.start()
        try:
            names = [t.name for t in sources._threads]
        finally:
            sources.stop()
        return tuple(sum(n.startswith(f"sqs-{lid}-") for n in names) for lid in ("FailMapping", "WorkMapping"))

    # Then as many pollers as the mapping allows, never more than the function's local concurrency
    assert pollers(1) == (1, 1)
    assert pollers(2) == (2, UNSCALED_POLLERS)
    assert pollers(None) == (3, UNSCALED_POLLERS)
