"""Helpers of the ops tests: messages dead-lettered the way SQS does it, orders placed the way the API does."""

from __future__ import annotations

import json
from typing import Any

import boto3
from typer.testing import CliRunner

from functions.executor import starter
from functions.payment.schemas import PaymentRequest
from functions.payment.service import place_checkout
from functions.shared.models import ChargeWork
from functions.shared.tables import PaymentTables
from ops.cli import app
from tests.support.aws import drain

TOKEN = "pm_1QxYzSecretToken9876"


def sqs() -> Any:
    return boto3.client("sqs", region_name="us-east-1")


def dead_letter_through_redrive_policy(queue_url: str) -> None:
    """Fail every message of `queue_url` the way a consumer does, until SQS moves them all to the DLQ."""
    for _ in range(100):
        if not sqs().receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages"):
            return
    raise AssertionError("messages never reached the dead-letter queue")


def depth(queue_url: str) -> int:
    attributes = sqs().get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def receive_all(queue_url: str) -> list[dict[str, Any]]:
    """Every message of the queue with its attributes, hidden for a minute (so each is seen once)."""
    found: list[dict[str, Any]] = []
    while True:
        batch = sqs().receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                      MessageAttributeNames=["All"]).get("Messages", [])
        if not batch:
            return found
        found += batch


def place(checkout_id: str, amounts: tuple[str, ...] = ("12.34",), orders_queue_url: str | None = None) -> list[str]:
    """Place a checkout as the API does; returns the order ids (their queue messages are drained)."""
    request = PaymentRequest.model_validate({
        "buyer_info": {"buyer_id": "b"}, "checkout_id": checkout_id,
        "credit_card_info": {"payment_method": TOKEN},
        "payment_orders": [{"seller_account": f"acct_seller{i}", "amount": amount, "currency": "USD",
                            "payment_order_id": f"{checkout_id}_{i}"} for i, amount in enumerate(amounts)],
    })
    place_checkout(request)
    if orders_queue_url:
        drain(orders_queue_url)
    return [f"{checkout_id}_{i}" for i in range(len(amounts))]


def charge_of(order_id: str) -> str:
    return PaymentTables.from_settings().get_order(order_id)["charge_key"]


def start(order_id: str) -> None:
    """Start attempt 1 of the order's charge, as the starter does."""
    assert starter.start_first_attempt(charge_of(order_id))


def executions() -> list[str]:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    [machine] = sfn.list_state_machines()["stateMachines"]
    return sorted(e["name"] for e in sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"])


def workflow_dead_letter(order_id: str, attempt: int) -> dict[str, Any]:
    """The body the state machine's ToDeadLetter state sends (infra/constructs/workflow.py), after a step failed
    in the workflow of the order's charge."""
    charge = PaymentTables.from_settings().get_charge(charge_of(order_id))
    work = ChargeWork.from_charge_item(charge, attempt=attempt).model_dump()
    return {
        "charge_key": charge["charge_key"],
        "checkout_id": charge["checkout_id"],
        "payment_order_ids": [o["payment_order_id"] for o in charge["orders"]],
        "step": "workflow",
        "error": {"Error": "KeyError", "Cause": json.dumps(
            {"errorMessage": "'psp_reference'", "errorType": "KeyError", "stackTrace": ["  File ..."]})},
        "attempts": attempt,
        "execution": f"{charge['charge_key'].replace('#', '-')}-{attempt}",
        "input": work,
    }


def send(queue_url: str, body: Any) -> None:
    sqs().send_message(QueueUrl=queue_url, MessageBody=body if isinstance(body, str) else json.dumps(body))


def cli(*args: str, input: str | None = None) -> Any:
    """Run `python -m ops ...` in-process; wide columns so rich does not wrap what the tests read."""
    return CliRunner().invoke(app, list(args), input=input, env={"COLUMNS": "250"}, catch_exceptions=False)
