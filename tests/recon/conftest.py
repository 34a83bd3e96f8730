"""A moto account with the recon function's resources (names and keys of docs/design.md)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute  # noqa: F401  (the parser imports Arrow on first use: loaded here, before hypothesis
import pyarrow.csv  # noqa: F401  times a test's first example against its deadline)
import pytest
from moto import mock_aws

from functions.recon.config import reload_recon_settings
from functions.recon.outcomes import Category, Outcome
from functions.shared import aws
from functions.shared.config import reload_settings
from functions.shared.names import charge_key
from functions.shared.tables import created_bucket, from_item, sweep_shard, to_item
from tests.support.aws import create_table

FIXTURES = Path(__file__).parent / "fixtures"
BUCKET = "settlement-test"
TABLES = {"PAYMENT_EVENTS_TABLE": "PaymentEvents", "PAYMENT_ORDERS_TABLE": "PaymentOrders",
          "WALLET_TABLE": "Wallet", "LEDGER_TABLE": "Ledger", "RECON_TABLE": "Recon", "CHARGES_TABLE": "Charges",
          "PAYOUTS_TABLE": "Payouts"}


def summarized(outcomes: list[Outcome]) -> tuple[list[Outcome], dict[str, list[int]]]:
    """Outcomes as the report sees them, whether the agreeing charges came one by one (rows) or together (a
    block): every other outcome, in order, and the agreeing charges' count and total per currency."""
    others, agreeing = [], {}
    for outcome in outcomes:
        if (outcome.category is Category.MATCHED and outcome.row_kind == "charge" and not outcome.explanation
                and outcome.theirs is not None):
            total = agreeing.setdefault(outcome.theirs.currency, [0, 0])
            total[0] += outcome.count
            total[1] += outcome.theirs.minor
        else:
            others.append(outcome)
    return others, agreeing


@dataclass
class LambdaContext:
    function_name: str = "Recon"
    memory_limit_in_mb: int = 1769
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:Recon"
    aws_request_id: str = "req-1"


@dataclass
class Account:
    review_queue_url: str
    recon_queue_url: str
    state_machine_arn: str
    orders_queue_url: str

    def queued_orders(self) -> list[dict[str, Any]]:
        answer = aws.client("sqs").receive_message(QueueUrl=self.orders_queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in answer.get("Messages", [])]

    @property
    def db(self) -> Any:
        return aws.client("dynamodb")

    @property
    def s3(self) -> Any:
        return aws.client("s3")

    def put_order(self, payment_order_id: str, amount_minor: int, currency: str = "USD", *,
                  status: str = "SUCCESS", psp_reference: str | None = None,
                  created_at: str = "2026-11-24T12:00:00.000Z",
                  psp: str | None = None, attempts: int = 1, checkout_id: str = "", charge_id: str | None = None
                  ) -> None:
        """An order of `checkout_id` (by default alone in its checkout `co_<payment_order_id>`), listed by the
        checkout's payment event as the API lists it."""
        checkout_id = checkout_id or f"co_{payment_order_id}"
        self.list_in_checkout(checkout_id, payment_order_id, amount_minor, currency)
        item = {
            "payment_order_id": payment_order_id, "checkout_id": checkout_id, "charge_id": charge_id,
            "seller_account": "seller_1", "amount_minor": amount_minor, "currency": currency,
            "payment_method": "pm_card_visa", "payment_order_status": status,
            "psp_reference": psp_reference, "attempts": attempts, "created_at": created_at,
            "updated_at": created_at, "psp": psp, "created_bucket": created_bucket(payment_order_id, created_at),
        }
        self.db.put_item(TableName="PaymentOrders", Item=to_item(item))
        if status in ("NOT_STARTED", "EXECUTING"):
            self.put_charge(checkout_id, currency, status, attempts=attempts if status == "EXECUTING" else 0)

    def put_charge(self, checkout_id: str, currency: str, status: str, *, attempts: int = 0,
                   due_at: str | None = None) -> None:
        """The charge of the checkout's orders in `currency` (listed by its event) as the API stores it; without
        `due_at`, dead-lettered by the sweeper (out of its index)."""
        event = from_item(self.db.get_item(TableName="PaymentEvents",
                                           Key=to_item({"checkout_id": checkout_id}))["Item"])
        orders = [{"payment_order_id": o["payment_order_id"], "seller_account": o["seller_account"],
                   "amount_minor": o["amount_minor"], "psp": "stripe"}
                  for o in event["payment_orders"] if o["currency"] == currency]
        key = charge_key(checkout_id, currency)
        item = {"charge_key": key, "checkout_id": checkout_id, "currency": currency, "orders": orders,
                "amount_minor": sum(o["amount_minor"] for o in orders), "payment_method": "pm_card_visa",
                "psp": "stripe", "charge_status": status, "attempts": attempts, "psp_calls": attempts,
                "created_at": "2026-11-24T12:00:00.000Z", "updated_at": "2026-11-24T12:00:00.000Z"}
        if due_at:
            item.update(sweep_shard=sweep_shard(key, 32), due_at=due_at)
        else:
            item["dead_letter_reason"] = f"{status} after {attempts} attempts"
        self.db.put_item(TableName="Charges", Item=to_item(item))

    def charge(self, key: str) -> dict[str, Any]:
        return from_item(self.db.get_item(TableName="Charges", Key=to_item({"charge_key": key}))["Item"])

    def list_in_checkout(self, checkout_id: str, payment_order_id: str, amount_minor: int, currency: str) -> None:
        """Add an order to its checkout's payment event (alone: an order the orders table lacks)."""
        summary = {"payment_order_id": payment_order_id, "seller_account": "seller_1", "amount_minor": amount_minor,
                   "currency": currency}
        self.db.update_item(
            TableName="PaymentEvents", Key=to_item({"checkout_id": checkout_id}),
            UpdateExpression="SET payment_orders = list_append(if_not_exists(payment_orders, :none), :one)",
            ExpressionAttributeValues=to_item({":none": [], ":one": [summary]}))

    def put_transaction(self, kind: str, reference: str, amount_minor: int, currency: str = "USD",
                        description: str | None = None, payment_order_id: str = "") -> None:
        item = {
            "transaction_id": f"{kind}#{reference}", "kind": kind, "reference": reference,
            "description": description, "created_at": "2026-11-24T12:00:00.000Z",
            "entries": [{"account": "a", "amount_minor": amount_minor, "currency": currency},
                        {"account": "b", "amount_minor": -amount_minor, "currency": currency}],
        }
        if payment_order_id:
            item["payment_order_id"] = payment_order_id
        self.db.put_item(TableName="Ledger", Item=to_item(item))

    def ledger_ids(self, prefix: str) -> set[str]:
        items = self.db.scan(TableName="Ledger")["Items"]
        return {i["transaction_id"]["S"] for i in items if i["transaction_id"]["S"].startswith(prefix)}

    def drop(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    def deliver(self) -> dict[str, Any]:
        """Run the handler on what S3 notified to the ReconQueue, as Lambda's SQS trigger would."""
        from functions.recon import handler

        answer = aws.client("sqs").receive_message(QueueUrl=self.recon_queue_url, MaxNumberOfMessages=10)
        if not answer.get("Messages"):
            return {"records": 0, "batchItemFailures": [], "messages": []}
        records = [
            {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
             "attributes": {}, "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
             "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ReconQueue", "awsRegion": "us-east-1"}
            for m in answer.get("Messages", [])
        ]
        result = handler.handler({"Records": records}, LambdaContext())
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for m in answer.get("Messages", []):
            if m["MessageId"] not in failed:
                aws.client("sqs").delete_message(QueueUrl=self.recon_queue_url, ReceiptHandle=m["ReceiptHandle"])
        return {"records": len(records), **result, "messages": answer.get("Messages", [])}

    def review_messages(self) -> list[dict[str, Any]]:
        found = []
        while True:
            answer = aws.client("sqs").receive_message(QueueUrl=self.review_queue_url, MaxNumberOfMessages=10)
            if not answer.get("Messages"):
                return found
            for m in answer["Messages"]:
                found.append(json.loads(m["Body"]))
                aws.client("sqs").delete_message(QueueUrl=self.review_queue_url, ReceiptHandle=m["ReceiptHandle"])

    def executions(self) -> list[dict[str, Any]]:
        sfn = aws.client("stepfunctions")
        listed = sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]
        return [sfn.describe_execution(executionArn=e["executionArn"]) for e in listed]

    def report(self, key: str) -> dict[str, Any]:
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def keys(self, prefix: str) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "POWERTOOLS_METRICS_NAMESPACE": "MarketPay", "POWERTOOLS_SERVICE_NAME": "recon"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        aws.reset_clients()
        for env, table in TABLES.items():
            monkeypatch.setenv(env, create_table(table, table))
        sqs = aws.client("sqs")
        urls = {}
        for name in ("ReconQueue", "ReviewQueue", "OrdersQueue"):
            dlq = sqs.create_queue(QueueName=f"{name}Dlq")["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            urls[name] = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})["QueueUrl"]
        recon_arn = sqs.get_queue_attributes(QueueUrl=urls["ReconQueue"],
                                             AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3 = aws.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [{
            "QueueArn": recon_arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
        }]})
        sfn = aws.client("stepfunctions").create_state_machine(
            name="PaymentWorkflow", roleArn="arn:aws:iam::123456789012:role/sfn", type="EXPRESS",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        )
        monkeypatch.setenv("REVIEW_QUEUE_URL", urls["ReviewQueue"])
        monkeypatch.setenv("ORDERS_QUEUE_URL", urls["OrdersQueue"])
        monkeypatch.setenv("SETTLEMENT_BUCKET", BUCKET)
        monkeypatch.setenv("STATE_MACHINE_ARN", sfn["stateMachineArn"])
        monkeypatch.setenv("PSP_NAME", "stripe")
        reload_settings()
        reload_recon_settings()
        acct = Account(urls["ReviewQueue"], urls["ReconQueue"], sfn["stateMachineArn"], urls["OrdersQueue"])
        # S3 sends a test event when a notification is configured; drain it through the handler.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "No application metrics")
            assert acct.deliver()["batchItemFailures"] == []
        yield acct
        aws.reset_clients()
