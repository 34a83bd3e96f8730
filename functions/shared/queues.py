"""SQS and Step Functions adapters: handing charges on, and dead-lettering what needs a human."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from functions.shared import aws
from functions.shared.charges import execution_name
from functions.shared.config import settings
from functions.shared.models import ChargeWork, OrderWork
from functions.shared.observability import CORRELATION_FIELD


def enqueue_charges(charges: Sequence[tuple[str, str]], correlation_ids: Mapping[str, str] | None = None
                    ) -> list[str]:
    """Send one message per (charge_key, checkout_id) to the orders queue, in batches of ten; returns the keys
    SQS did not accept. The starter reads the stored charge: the message only names it, and carries the charge's
    correlation id (`correlation_ids`, by charge key) as the message attribute `correlation_id`."""
    failed: list[str] = []
    queue_url = settings().orders_queue_url
    known = correlation_ids or {}
    for start in range(0, len(charges), 10):
        batch = charges[start : start + 10]
        answer = aws.client("sqs").send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": json.dumps({"charge_key": key, "checkout_id": checkout_id}),
                      **_correlation_attribute(known.get(key))}
                     for i, (key, checkout_id) in enumerate(batch)],
        )
        failed += [batch[int(entry["Id"])][0] for entry in answer.get("Failed", [])]
    return failed


def _correlation_attribute(correlation_id: str | None) -> dict[str, Any]:
    if not correlation_id:
        return {}
    return {"MessageAttributes": {CORRELATION_FIELD: {"DataType": "String", "StringValue": correlation_id}}}


def correlation_id_of_message(attributes: Mapping[str, Any] | None) -> str:
    """The `correlation_id` message attribute of a received SQS record (Lambda's shape), or ""."""
    attribute = (attributes or {}).get(CORRELATION_FIELD) or {}
    return str(attribute.get("stringValue") or attribute.get("StringValue") or "")


def enqueue_orders(orders: Sequence[OrderWork]) -> list[str]:
    """Hand stored orders back to their normal path: their charges are enqueued (reconciliation's restart)."""
    charges = list(dict.fromkeys((order.charge_key, order.checkout_id) for order in orders))
    failed = set(enqueue_charges(charges))
    return [order.payment_order_id for order in orders if order.charge_key in failed]


def start_workflow(work: ChargeWork) -> str:
    """Start the charge's workflow for `work.attempt`, under the attempt's deterministic name.

    ExecutionAlreadyExists means this attempt was started before (a redelivery after a lost answer): started.
    """
    name = execution_name(work.charge_key, work.attempt)
    arn = settings().state_machine_arn
    try:
        answer = aws.client("stepfunctions").start_execution(
            stateMachineArn=arn, name=name, input=work.model_dump_json())
    except ClientError as error:
        if aws.error_code(error) != "ExecutionAlreadyExists":
            raise
        return f"{arn.replace(':stateMachine:', ':express:')}:{name}"
    return str(answer["executionArn"])


def dead_letter(charge_key: str, step: str, error: str, attempts: int, detail: dict[str, Any]) -> None:
    """One message that says enough to act on: which charge (and orders), which step, what failed, how often."""
    body = {"charge_key": charge_key, "step": step, "error": error, "attempts": attempts, **detail}
    aws.client("sqs").send_message(QueueUrl=settings().workflow_dlq_url, MessageBody=json.dumps(body, default=str))


def dead_letter_payout(payment_order_id: str, step: str, error: str, attempts: int, detail: dict[str, Any]) -> None:
    """One PayoutsDlq message that says enough to act on: which order, which step, what failed, how often."""
    body = {"payment_order_id": payment_order_id, "step": step, "error": error, "attempts": attempts, **detail}
    aws.client("sqs").send_message(QueueUrl=settings().payouts_dlq_url, MessageBody=json.dumps(body, default=str))


def send_for_review(body: dict[str, Any]) -> None:
    """One ReviewQueue message (alarmed): a difference a human must look at. `discrepancy_id` must be
    deterministic, so the reviewer's tooling drops the repeats of an at-least-once sender."""
    aws.client("sqs").send_message(QueueUrl=settings().review_queue_url, MessageBody=json.dumps(body, default=str))


def send_webhook_event(raw_event: str, event_type: str) -> None:
    """The verified webhook event, as Stripe signed it, to WebhookQueue (the processor's)."""
    aws.client("sqs").send_message(
        QueueUrl=settings().webhook_queue_url, MessageBody=raw_event,
        MessageAttributes={"event_type": {"DataType": "String", "StringValue": event_type[:256] or "unknown"}})


def enqueue_notifications(messages: Sequence[tuple[str, str]]) -> list[str]:
    """Send (event_id, body) pairs to NotificationsQueue in batches of ten; returns the event ids SQS refused."""
    failed: list[str] = []
    queue_url = settings().notifications_queue_url
    for start in range(0, len(messages), 10):
        batch = messages[start : start + 10]
        answer = aws.client("sqs").send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": body} for i, (_, body) in enumerate(batch)])
        failed += [batch[int(entry["Id"])][0] for entry in answer.get("Failed", [])]
    return failed


def retry_notification_after(receipt_handle: str, seconds: int) -> None:
    """Make a received notification visible again in `seconds` (0 to 12 h, SQS's limit from this receipt)."""
    aws.client("sqs").change_message_visibility(
        QueueUrl=settings().notifications_queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds)


def dead_letter_notification(body: dict[str, Any]) -> None:
    """One NotificationsDlq message: the event, where it was going, how often it was tried and the last error."""
    aws.client("sqs").send_message(QueueUrl=settings().notifications_dlq_url,
                                   MessageBody=json.dumps(body, default=str))


def enqueue_refund(refund_id: str, delay_s: int = 0) -> None:
    """One message naming the refund to RefundsQueue, delivered after `delay_s` (at most 900: SQS's limit)."""
    aws.client("sqs").send_message(QueueUrl=settings().refunds_queue_url, DelaySeconds=max(0, min(delay_s, 900)),
                                   MessageBody=json.dumps({"refund_id": refund_id}))
