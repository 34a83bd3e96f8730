"""Each function has its own role with exactly the permissions its code uses, and nothing else."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from infra import names
from tests.infra.support import as_list, render

# One synthesis per xdist worker: keep every test that reads it on the same worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("infra-synth")

READ = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}
WRITE = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"}
GET_UPDATE = {"dynamodb:GetItem", "dynamodb:UpdateItem"}
SEND = {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
CONSUME = {
    "sqs:ReceiveMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueUrl",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
}
START = {"states:StartExecution"}
XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}  # active tracing: every function, checked apart
STREAM_READ = {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"}
PSP_KEY = "arn:<AWS::Partition>:ssm:us-east-1:<AWS::AccountId>:parameter/marketpay/stripe/secret-key"
ADYEN_KEY = "arn:<AWS::Partition>:ssm:us-east-1:<AWS::AccountId>:parameter/marketpay/adyen/api-key"
ANY_KMS_KEY = "arn:<AWS::Partition>:kms:us-east-1:<AWS::AccountId>:key/*"
WEBHOOK_SECRET = "arn:<AWS::Partition>:ssm:us-east-1:<AWS::AccountId>:parameter/marketpay/stripe/webhook-secret"
ADYEN_HMAC_KEY = "arn:<AWS::Partition>:ssm:us-east-1:<AWS::AccountId>:parameter/marketpay/adyen/hmac-key"

# function -> resource (friendly name, see `friendly`) -> actions. Log-group writes are checked separately.
EXPECTED: dict[str, dict[str, set[str]]] = {
    "PaymentApi": {
        "table:PaymentEvents": READ | WRITE,
        "table:PaymentOrders": READ | WRITE,
        # PutItem only inside the checkout's transaction; GetItem, UpdateItem: a check's funds recorded (issue 17)
        "table:Charges": {"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem"},
        "queue:OrdersQueue": SEND,
        "table:Sellers": READ | WRITE,
        "table:Payouts": READ | WRITE,  # release (creating the item of an order settled before pay-outs)
        "table:Payouts/index/awaiting_account": {"dynamodb:Query"},  # a registration wakes waiting pay-outs
        "table:Wallet": READ,  # balance
        "table:Wallet/index/statement": {"dynamodb:Query"},
        "queue:PayoutsQueue": SEND,
        "table:NotificationEndpoints": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        "table:Refunds": READ | WRITE,  # a refund and its order's reservation in one transaction
        "queue:RefundsQueue": SEND,
        "table:PspHealth": {"dynamodb:GetItem"},  # failover: is a PSP's breaker open
    },
    "OrderStarter": {
        "table:Charges": GET_UPDATE,
        "table:PaymentOrders": {"dynamodb:UpdateItem"},
        "queue:OrdersQueue": CONSUME,
        "state-machine": START,
    },
    "Executor": {"table:Charges": GET_UPDATE, "table:PspHealth": GET_UPDATE, PSP_KEY: {"ssm:GetParameter"},
                 ADYEN_KEY: {"ssm:GetParameter"}, ANY_KMS_KEY: {"kms:Decrypt"}},
    "Wallet": {"table:Wallet": READ | WRITE},
    "Ledger": {"table:Ledger": {"dynamodb:GetItem", "dynamodb:PutItem"}},
    "Finalize": {"table:PaymentOrders": GET_UPDATE, "table:PaymentEvents": GET_UPDATE,
                 "table:Charges": GET_UPDATE, "table:Payouts": {"dynamodb:PutItem"}, "table:Sellers": READ},
    "Sweeper": {
        "table:Charges/index/sweep": {"dynamodb:Query"},
        "table:Charges": GET_UPDATE,
        "table:PaymentOrders": {"dynamodb:UpdateItem"},
        "queue:OrdersQueue": SEND,
        "queue:WorkflowDlq": SEND,
        "state-machine": START,
        "table:Payouts": READ | WRITE,  # auto-release, lost messages, retries
        "table:Payouts/index/sweep": {"dynamodb:Query"},
        "table:Sellers": READ,
        "queue:PayoutsQueue": SEND,
        "queue:PayoutsDlq": SEND,
    },
    "Recon": {
        # No Scan: the window and rows without our id come from these indexes. UpdateItem: a dead-lettered
        # charge's orders go back under the sweeper's watch with it.
        "table:PaymentOrders": READ | {"dynamodb:UpdateItem"},
        "table:Charges": GET_UPDATE,  # a settled charge still in progress is handed back (adapters.py)
        "table:PaymentEvents": {"dynamodb:BatchGetItem"},  # a checkout's orders, by currency
        "table:PaymentOrders/index/created": {"dynamodb:Query"},
        "table:PaymentOrders/index/psp_reference": {"dynamodb:Query"},
        "table:Charges/index/offline_receipts": {"dynamodb:Query"},  # a bank deposit file's day (issue 17)
        "table:Ledger": READ | {"dynamodb:PutItem"},  # no Scan: refunds by order come from its index
        "table:Ledger/index/payment_order_id": {"dynamodb:Query"},
        "table:Recon": READ | WRITE | {"dynamodb:DeleteItem"},
        "queue:ReviewQueue": SEND,
        "queue:OrdersQueue": SEND,  # a settled charge still NOT_STARTED goes back to its normal path
        "queue:ReconQueue": CONSUME,
        "bucket:SettlementBucket/incoming/*": {"s3:GetObject", "s3:DeleteObject"},
        "bucket:SettlementBucket/reports/*": {"s3:PutObject", "s3:AbortMultipartUpload"},
        "bucket:SettlementBucket/quarantine/*": {"s3:PutObject"},
        "state-machine": START,  # a dead-lettered charge past the sweeper's attempts: its next attempt
        "table:Payouts": READ,
        "table:Payouts/index/transferred": {"dynamodb:Query"},  # our transfers of the file's window
    },
    "Transfer": {
        "table:Payouts": READ | WRITE,
        "table:Sellers": READ,
        "table:Wallet": READ | WRITE,
        "table:Ledger": READ | {"dynamodb:PutItem"},
        "queue:PayoutsQueue": SEND | CONSUME,
        "queue:PayoutsDlq": SEND,
        PSP_KEY: {"ssm:GetParameter"},
        ANY_KMS_KEY: {"kms:Decrypt"},
    },
    # Webhooks in: the receiver only reads Stripe's signing secret and Adyen's HMAC key and sends to its queue (no
    # table, no PSP API key).
    "WebhookReceiver": {WEBHOOK_SECRET: {"ssm:GetParameter"}, ADYEN_HMAC_KEY: {"ssm:GetParameter"},
                        ANY_KMS_KEY: {"kms:Decrypt"}, "queue:WebhookQueue": {"sqs:SendMessage"}},
    "WebhookProcessor": {
        "table:WebhookEvents": GET_UPDATE,  # claim / complete / release
        "queue:WebhookQueue": CONSUME,
        "table:Charges": GET_UPDATE,  # a parked charge's sweep brought forward
        "table:Sellers": READ | {"dynamodb:UpdateItem"},  # facts of the seller's account, newest first
        "table:Sellers/index/psp_account_id": {"dynamodb:Query"},
        "table:Payouts": READ | WRITE,  # wake_awaiting; a reversal's pay-out read
        "table:Payouts/index/awaiting_account": {"dynamodb:Query"},
        "queue:PayoutsQueue": SEND,
        "queue:ReviewQueue": SEND,
        # Refund events: apply_psp_refund, with exactly the RefundWorker's grants (below) but consuming.
        "table:Refunds": READ | WRITE,
        "table:PaymentOrders": READ | WRITE,
        "table:Wallet": READ | WRITE,
        "table:Ledger": {"dynamodb:GetItem", "dynamodb:PutItem"},
        "queue:RefundsQueue": SEND,  # a pending refund's poll, a pay-out between steps: the worker looks again
        PSP_KEY: {"ssm:GetParameter"},  # a finished refund's reversal
        ANY_KMS_KEY: {"kms:Decrypt"},
    },
    # Lambda reads the streams for it (the mapping uses the function's role); it only sends events on.
    "Notifier": {
        "table:PaymentOrders": STREAM_READ,  # on its StreamArn (rendered as the table)
        "table:Payouts": STREAM_READ,
        "table:Refunds": STREAM_READ,
        "*": {"dynamodb:ListStreams"},  # no resource-level permissions for it
        "queue:NotificationsQueue": SEND,
        "queue:NotificationStreamDlq": SEND,  # the mappings' on-failure destination
    },
    "Deliverer": {
        "table:NotificationEndpoints": {"dynamodb:GetItem"},  # the URL and the signing secret
        "queue:NotificationsQueue": CONSUME,  # ChangeMessageVisibility: a failed delivery's next wait
        "queue:NotificationsDlq": SEND,
    },
    # Internal recon (issue 19): scans what it compares; fixes only through the wallet and ledger steps' own
    # writes; writes only its reports.
    "InternalRecon": {
        "table:PaymentOrders": {"dynamodb:Scan"},
        "table:Payouts": {"dynamodb:Scan"},
        "table:Refunds": {"dynamodb:Scan"},
        "table:Charges": {"dynamodb:GetItem"},  # the charge of an order to re-drive
        "table:Wallet": READ | WRITE | {"dynamodb:Scan"},
        "table:Ledger": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Scan"},
        "bucket:SettlementBucket/reports/internal/*": {"s3:PutObject", "s3:AbortMultipartUpload"},
    },
    "RefundWorker": {
        "table:Refunds": READ | WRITE,
        "table:PaymentOrders": READ | WRITE,  # a failed refund gives the order's reservation back
        "table:Payouts": READ | WRITE,  # the refund's timing frozen with the pay-out's change
        "table:Wallet": READ | WRITE,
        "table:Ledger": {"dynamodb:GetItem", "dynamodb:PutItem"},
        "queue:RefundsQueue": SEND | CONSUME,  # the poll of a pending refund
        PSP_KEY: {"ssm:GetParameter"},
        ADYEN_KEY: {"ssm:GetParameter"},  # an Adyen-charged order is refunded at Adyen
        ANY_KMS_KEY: {"kms:Decrypt"},
    },
}
# Disputes (infra/constructs/disputes.py): the processor applies charge.dispute.* (the dispute, its orders found by
# their PaymentIntent, the pay-outs' holds and shares, wallet and ledger); PaymentApi shows them on an order; the
# Notifier reads the Disputes stream.
EXPECTED["WebhookProcessor"].update({
    "table:Disputes": READ | WRITE, "table:PaymentOrders": READ | WRITE,
    "table:PaymentOrders/index/psp_reference": {"dynamodb:Query"}, "table:Wallet": READ | WRITE,
    "table:Ledger": {"dynamodb:GetItem", "dynamodb:PutItem"}})
EXPECTED["PaymentApi"]["table:Disputes"] = {"dynamodb:GetItem", "dynamodb:BatchGetItem"}
EXPECTED["Notifier"]["table:Disputes"] = STREAM_READ | {"dynamodb:BatchGetItem"}  # an order's payload
# API keys (issue 21): the authorizer only reads a key by its hash; nobody else reads the table (ops is a person).
EXPECTED["ApiAuthorizer"] = {"table:ApiKeys": {"dynamodb:GetItem"}, "table:ApiRateWindows": {"dynamodb:UpdateItem"}}


@pytest.fixture(scope="module")
def friendly(synth) -> dict[str, str]:
    """Logical id -> readable name of every resource a policy may point at."""
    names_by_id = {}
    for table in names.OUT_TABLE_NAMES:
        names_by_id[synth.logical_id("AWS::DynamoDB::Table", f"{names.TABLES}{table}")] = f"table:{table}"
    for queue in names.OUT_QUEUE_URLS:
        names_by_id[synth.logical_id("AWS::SQS::Queue", f"{names.QUEUES}{queue}")] = f"queue:{queue}"
    names_by_id[synth.logical_id("AWS::DynamoDB::Table", f"{names.NOTIFICATIONS}{names.NOTIFICATION_ENDPOINTS}")] = (
        f"table:{names.NOTIFICATION_ENDPOINTS}")
    for queue in names.OUT_NOTIFICATION_QUEUE_URLS:
        names_by_id[synth.logical_id("AWS::SQS::Queue", f"{names.NOTIFICATIONS}{queue}")] = f"queue:{queue}"
    names_by_id[synth.logical_id("AWS::DynamoDB::Table", f"{names.REFUNDS_CONSTRUCT}{names.REFUNDS}")] = "table:Refunds"
    names_by_id[synth.logical_id("AWS::DynamoDB::Table", f"{names.API}{names.API_KEYS}")] = "table:ApiKeys"
    names_by_id[synth.logical_id("AWS::DynamoDB::Table", f"{names.API}{names.API_RATE_WINDOWS}")] = (
        "table:ApiRateWindows")
    for queue in (names.REFUNDS_QUEUE, names.REFUNDS_DLQ):
        names_by_id[synth.logical_id("AWS::SQS::Queue", f"{names.REFUNDS_CONSTRUCT}{queue}")] = f"queue:{queue}"
    bucket = synth.logical_id("AWS::S3::Bucket", f"{names.SETTLEMENT}{names.SETTLEMENT_BUCKET}")
    names_by_id[bucket] = f"bucket:{names.SETTLEMENT_BUCKET}"
    (machine,) = synth.of_type("AWS::StepFunctions::StateMachine")
    names_by_id[machine] = "state-machine"
    names_by_id[synth.logical_id("AWS::DynamoDB::Table", f"{names.WEBHOOKS}{names.WEBHOOK_EVENTS}")] = (
        f"table:{names.WEBHOOK_EVENTS}")
    for queue in (names.WEBHOOK_QUEUE, names.WEBHOOK_DLQ):
        names_by_id[synth.logical_id("AWS::SQS::Queue", f"{names.WEBHOOKS}{queue}")] = f"queue:{queue}"
    names_by_id[synth.logical_id("AWS::DynamoDB::Table", f"{names.DISPUTES_CONSTRUCT}{names.DISPUTES}")] = (
        f"table:{names.DISPUTES}")
    return names_by_id


def role_statements(synth, function: names.FunctionSpec) -> list[dict[str, Any]]:
    fn = synth.logical_id("AWS::Lambda::Function", f"{names.FUNCTIONS}{function.name}")
    role = synth.props(fn)["Role"]["Fn::GetAtt"][0]
    assert not synth.props(role).get("ManagedPolicyArns"), "no managed policies: everything is spelled out"
    assert not synth.props(role).get("Policies"), "no inline policies besides the role's own policy resource"
    policies = [p for p in synth.of_type("AWS::IAM::Policy").values() if {"Ref": role} in p["Properties"]["Roles"]]
    assert len(policies) == 1
    # The role is this function's alone.
    others = [
        lid
        for lid, r in synth.of_type("AWS::Lambda::Function").items()
        if lid != fn and r["Properties"]["Role"] == {"Fn::GetAtt": [role, "Arn"]}
    ]
    assert not others
    return policies[0]["Properties"]["PolicyDocument"]["Statement"]


def permissions(synth, function: names.FunctionSpec, friendly: dict[str, str]) -> dict[str, set[str]]:
    granted: dict[str, set[str]] = defaultdict(set)
    for statement in role_statements(synth, function):
        assert statement["Effect"] == "Allow"
        actions = set(as_list(statement["Action"]))
        if actions <= {"logs:CreateLogStream", "logs:PutLogEvents"} or actions == XRAY:
            continue
        for resource in as_list(statement["Resource"]):
            text = render(resource)
            for lid, name in friendly.items():
                text = text.replace(lid, name) if text.startswith(lid) else text
            granted[text] |= actions
    return dict(granted)


@pytest.mark.parametrize("function", names.ALL_FUNCTIONS, ids=lambda f: f.name)
def test_each_function_has_exactly_its_permissions(synth, friendly, function):
    assert permissions(synth, function, friendly) == EXPECTED[function.name]


@pytest.mark.parametrize("function", names.ALL_FUNCTIONS, ids=lambda f: f.name)
def test_each_function_writes_only_its_own_log_group(synth, function):
    fn = synth.logical_id("AWS::Lambda::Function", f"{names.FUNCTIONS}{function.name}")
    own = synth.props(fn)["LoggingConfig"]["LogGroup"]["Ref"]
    assert synth.resources[own]["Type"] == "AWS::Logs::LogGroup"
    log_statements = [s for s in role_statements(synth, function) if str(s["Action"]).count("logs:")]
    assert [render(s["Resource"]) for s in log_statements] == [own]


def test_wallet_cannot_touch_payment_events_or_any_other_table(synth, friendly):
    granted = permissions(synth, names.WALLET_FN, friendly)
    assert [r for r in granted if r.startswith("table:")] == ["table:Wallet"]


def test_only_the_executor_can_read_the_psp_secret(synth, friendly):
    readers = {
        f.name
        for f in names.ALL_FUNCTIONS
        if any(a.startswith(("ssm:", "kms:")) for acts in permissions(synth, f, friendly).values() for a in acts)
    }
    # the receiver: its signing secret; the processor: the PSP key for a refund's reversal
    assert readers == {"Executor", "Transfer", "RefundWorker", "WebhookReceiver", "WebhookProcessor"}


def test_only_the_executor_and_the_refund_worker_can_read_the_adyen_key(synth, friendly):
    readers = {f.name for f in names.ALL_FUNCTIONS if ADYEN_KEY in permissions(synth, f, friendly)}
    assert readers == {"Executor", "RefundWorker"}


def test_only_the_receiver_can_read_adyens_hmac_key(synth, friendly):
    readers = {f.name for f in names.ALL_FUNCTIONS if ADYEN_HMAC_KEY in permissions(synth, f, friendly)}
    assert readers == {"WebhookReceiver"}


@pytest.mark.parametrize("function", [names.EXECUTOR, names.TRANSFER, names.REFUND_WORKER, names.WEBHOOK_RECEIVER,
                                      names.WEBHOOK_PROCESSOR], ids=lambda f: f.name)
def test_kms_decrypt_is_only_through_ssm(synth, function):
    (statement,) = [s for s in role_statements(synth, function) if s["Action"] == "kms:Decrypt"]
    assert statement["Condition"] == {"StringEquals": {"kms:ViaService": "ssm.us-east-1.amazonaws.com"}}


def test_no_policy_in_the_stack_grants_a_wildcard_action(synth):
    for lid, policy in synth.of_type("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            for action in as_list(statement["Action"]):
                assert "*" not in action, (lid, action)


@pytest.mark.parametrize("function", names.ALL_FUNCTIONS, ids=lambda f: f.name)
def test_each_function_is_traced_and_may_only_send_traces_besides(synth, function):
    fn = synth.logical_id("AWS::Lambda::Function", f"{names.FUNCTIONS}{function.name}")
    assert synth.props(fn)["TracingConfig"] == {"Mode": "Active"}
    traces = [s for s in role_statements(synth, function) if set(as_list(s["Action"])) & XRAY]
    assert [(set(as_list(s["Action"])), s["Resource"]) for s in traces] == [(XRAY, "*")]


def test_the_workflow_is_traced(synth):
    [machine] = synth.of_type("AWS::StepFunctions::StateMachine").values()
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}
