"""OrdersDlq, ReconDlq, ReviewDlq: messages go back to their main queue, one at a time, bodies and attributes kept."""

import json

import pytest

from functions.executor import starter
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables
from ops.messages import Queue
from ops.redrive import redrive_queue
from ops.resources import Resources, find_dlq
from tests.ops.support import dead_letter_through_redrive_policy, depth, place, receive_all, sqs
from tests.support.events import FakeContext, load

ATTRIBUTES = {
    "origin": {"DataType": "String", "StringValue": "storefront"},
    "tries": {"DataType": "Number", "StringValue": "3"},
    "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
}


def fill(env, main_env, bodies):
    for body in bodies:
        sqs().send_message(QueueUrl=env[main_env], MessageBody=body, MessageAttributes=ATTRIBUTES)
    dead_letter_through_redrive_policy(env[main_env])


@pytest.mark.parametrize("name, main_env, dlq_env", [
    ("orders", "ORDERS_QUEUE_URL", "ORDERS_DLQ_URL"),
    ("recon", "RECON_QUEUE_URL", "RECON_DLQ_URL"),
    ("review", "REVIEW_QUEUE_URL", "REVIEW_DLQ_URL"),
])
def test_redrive_moves_every_message_back_with_body_and_attributes(system, name, main_env, dlq_env):
    # Given three messages that failed five times and sit in the DLQ
    bodies = [json.dumps({"n": i, "text": "ünïcode"}) for i in range(3)]
    fill(system, main_env, bodies)
    assert depth(system[dlq_env]) == 3 and depth(system[main_env]) == 0

    # When the DLQ is redriven
    results = redrive_queue(find_dlq(name), Resources())

    # Then every message is back in the main queue, unchanged, and the DLQ is empty
    assert [r.outcome.action.value for r in results] == ["moved"] * 3 and all(r.deleted for r in results)
    moved = receive_all(system[main_env])
    assert sorted(m["Body"] for m in moved) == sorted(bodies)
    for message in moved:
        assert message["MessageAttributes"] == ATTRIBUTES
    assert depth(system[dlq_env]) == 0


def test_dry_run_moves_nothing_and_leaves_messages_visible(system):
    fill(system, "ORDERS_QUEUE_URL", ["a", "b"])
    results = redrive_queue(find_dlq("orders"), Resources(), dry_run=True)
    assert [r.outcome.detail for r in results] == ["would move to OrdersQueue"] * 2
    assert not any(r.deleted for r in results)
    assert depth(system["ORDERS_QUEUE_URL"]) == 0
    assert depth(system["ORDERS_DLQ_URL"]) == 2  # visible again at once, not hidden for the work timeout


def test_limit_moves_only_that_many(system):
    fill(system, "RECON_QUEUE_URL", ["1", "2", "3"])
    results = redrive_queue(find_dlq("recon"), Resources(), limit=2)
    assert len(results) == 2
    assert depth(system["RECON_QUEUE_URL"]) == 2 and depth(system["RECON_DLQ_URL"]) == 1


def test_a_crash_between_send_and_delete_duplicates_and_loses_nothing(system, monkeypatch):
    fill(system, "REVIEW_QUEUE_URL", ["x", "y"])

    def crash(self, message):
        raise RuntimeError("killed")

    monkeypatch.setattr(Queue, "delete", crash)
    with pytest.raises(RuntimeError):
        redrive_queue(find_dlq("review"), Resources())
    # The first message was sent but not deleted: it is in both queues; the second never left the DLQ.
    assert depth(system["REVIEW_QUEUE_URL"]) == 1
    assert depth(system["REVIEW_DLQ_URL"]) == 2  # both visible again (the crashed one released, the other unread)

    monkeypatch.undo()
    redrive_queue(find_dlq("review"), Resources())  # running again finishes the job
    assert sorted(m["Body"] for m in receive_all(system["REVIEW_QUEUE_URL"])) == ["x", "x", "y"]
    assert depth(system["REVIEW_DLQ_URL"]) == 0


def test_a_redriven_order_message_is_started_by_the_starter_once(system):
    # Given an order whose starter message failed five times
    [order_id] = place("chk_od")
    dead_letter_through_redrive_policy(system["ORDERS_QUEUE_URL"])
    assert depth(system["ORDERS_DLQ_URL"]) == 1

    # When it is redriven twice over (a second on-call ran it again, and the original came back too)
    redrive_queue(find_dlq("orders"), Resources())
    bodies = [m["Body"] for m in receive_all(system["ORDERS_QUEUE_URL"])]
    event = load("sqs_order.json")
    record = event["Records"][0]
    event["Records"] = [dict(record, messageId=f"m{i}", body=b) for i, b in enumerate(bodies + bodies)]

    # Then the starter starts the order's charge once and skips the duplicate
    assert starter.handler(event, FakeContext()) == {"batchItemFailures": []}
    order = PaymentTables.from_settings().get_order(order_id)
    assert order["payment_order_status"] == OrderStatus.EXECUTING.value
    assert PaymentTables.from_settings().get_charge(order["charge_key"])["attempts"] == 1
