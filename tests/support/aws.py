"""Creates the tables and queues of docs/design.md in moto for handler-level tests.

tests/infra checks these shapes against the synthesized template, so the two cannot drift.
"""

from __future__ import annotations

import os
from typing import Any

import boto3

from functions.shared import aws, psp
from functions.shared.config import reload_settings

TABLE_KEYS: dict[str, dict[str, Any]] = {
    "PaymentEvents": {"hash": "checkout_id"},
    "PaymentOrders": {"hash": "payment_order_id",
                      "gsi": {"created": ("created_bucket", "created_at"), "psp_reference": ("psp_reference", None)}},
    "Charges": {"hash": "charge_key", "gsi": {"sweep": ("sweep_shard", "due_at"),
                                              "offline_receipts": ("receipt_day", "charge_key")}},
    "Wallet": {"hash": "account_id", "range": "sk", "gsi": {"statement": ("statement_key", "created_at")},
               "projection": {"statement": "ALL"}},
    "Ledger": {"hash": "transaction_id", "gsi": {"payment_order_id": ("payment_order_id", None)}},
    "Recon": {"hash": "pk", "range": "sk"},
    "Sellers": {"hash": "seller_account", "gsi": {"psp_account_id": ("psp_account_id", None)}},
    "Payouts": {"hash": "payment_order_id",
                "gsi": {"sweep": ("sweep_shard", "due_at"), "transferred": ("transferred_bucket", "transferred_at"),
                        "awaiting_account": ("awaiting_seller", None)}},
    "WebhookEvents": {"hash": "event_id"},
    "Refunds": {"hash": "refund_id"},
    "Disputes": {"hash": "dispute_id"},
    "ApiKeys": {"hash": "key_hash"},
    "ApiRateWindows": {"hash": "window"},
    "PspHealth": {"hash": "psp"},
}
QUEUES = ["OrdersQueue", "WorkflowDlq", "ReviewQueue", "ReconQueue", "PayoutsQueue", "PayoutsDlq", "WebhookQueue",
          "RefundsQueue", "RefundsDlq"]


def create_table(logical: str, name: str) -> str:
    """Create the table `logical` of TABLE_KEYS, with its indexes, as `name` in the active moto mock."""
    spec = TABLE_KEYS[logical]
    attributes = {spec["hash"]: "S"}
    keys = [{"AttributeName": spec["hash"], "KeyType": "HASH"}]
    if "range" in spec:
        attributes[spec["range"]] = "S"
        keys.append({"AttributeName": spec["range"], "KeyType": "RANGE"})
    indexes = []
    for index, (hash_key, range_key) in spec.get("gsi", {}).items():
        attributes[hash_key] = "S"
        schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        if range_key:
            attributes[range_key] = "S"
            schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
        projection = spec.get("projection", {}).get(index, "KEYS_ONLY")
        indexes.append({"IndexName": index, "KeySchema": schema, "Projection": {"ProjectionType": projection}})
    kwargs: dict[str, Any] = {"GlobalSecondaryIndexes": indexes} if indexes else {}
    boto3.client("dynamodb", region_name="us-east-1").create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST", KeySchema=keys,
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": t} for k, t in attributes.items()],
        **kwargs,
    )
    return name


def create_resources(prefix: str = "test") -> dict[str, str]:
    """Create tables and queues in the active moto mock; set and return the environment the functions read."""
    env: dict[str, str] = {}
    for logical in TABLE_KEYS:
        env[_table_env(logical)] = create_table(logical, f"{prefix}-{logical}")
    sqs = boto3.client("sqs", region_name="us-east-1")
    for queue in QUEUES:
        env[_queue_env(queue)] = sqs.create_queue(QueueName=f"{prefix}-{queue}")["QueueUrl"]
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=f"{prefix}-settlement")
    env["SETTLEMENT_BUCKET"] = f"{prefix}-settlement"
    env["STATE_MACHINE_ARN"] = f"arn:aws:states:us-east-1:123456789012:stateMachine:{prefix}-PaymentWorkflow"
    os.environ.update(env)
    reload_settings()
    aws.reset_clients()
    psp.reset_client()
    return env


def _table_env(logical: str) -> str:
    snake = "".join(f"_{c}" if c.isupper() else c for c in logical).strip("_").upper()
    return f"{snake}_TABLE"


def _queue_env(queue: str) -> str:
    return {"OrdersQueue": "ORDERS_QUEUE_URL", "WorkflowDlq": "WORKFLOW_DLQ_URL",
            "ReviewQueue": "REVIEW_QUEUE_URL", "ReconQueue": "RECON_QUEUE_URL",
            "PayoutsQueue": "PAYOUTS_QUEUE_URL", "PayoutsDlq": "PAYOUTS_DLQ_URL",
            "WebhookQueue": "WEBHOOK_QUEUE_URL",
            "RefundsQueue": "REFUNDS_QUEUE_URL", "RefundsDlq": "REFUNDS_DLQ_URL"}[queue]


def drain(queue_url: str) -> list[str]:
    """Every message body waiting in a queue (deleting them)."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    bodies: list[str] = []
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
