"""SQS and Step Functions adapters: handing orders on, and dead-lettering what needs a human."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from functions.shared import aws
from functions.shared.config import settings
from functions.shared.models import OrderWork


def enqueue_orders(orders: Sequence[OrderWork]) -> list[str]:
    """Send each order to the orders queue (batches of ten); returns the ids SQS did not accept."""
    failed: list[str] = []
    queue_url = settings().orders_queue_url
    for start in range(0, len(orders), 10):
        batch = orders[start : start + 10]
        answer = aws.client("sqs").send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": order.model_dump_json()} for i, order in enumerate(batch)],
        )
        failed += [batch[int(entry["Id"])].payment_order_id for entry in answer.get("Failed", [])]
    return failed


def start_workflow(work: OrderWork, name_suffix: str = "") -> str:
    """Start the order's workflow; the execution name says which order and which attempt it is."""
    name = f"{work.payment_order_id}-{work.attempt}{name_suffix}"[:80]
    answer = aws.client("stepfunctions").start_execution(
        stateMachineArn=settings().state_machine_arn, name=name, input=work.model_dump_json()
    )
    return str(answer["executionArn"])


def dead_letter(payment_order_id: str, step: str, error: str, attempts: int, detail: dict[str, Any]) -> None:
    """One message that says enough to act on: which order, which step, what failed, how often."""
    body = {"payment_order_id": payment_order_id, "step": step, "error": error, "attempts": attempts, **detail}
    aws.client("sqs").send_message(QueueUrl=settings().workflow_dlq_url, MessageBody=json.dumps(body, default=str))
