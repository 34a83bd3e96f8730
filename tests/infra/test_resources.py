"""Tables, queues, bucket, functions, triggers, API, alarms and outputs are those of docs/design.md."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match, Template

from functions.shared.config import Settings
from infra import names
from infra.constructs.functions import BASE_LAYER, EXTRA_LAYERS, LAYER_METADATA
from tests.infra.support import render
from tests.support import aws as moto_tables

# One synthesis per xdist worker: keep every test that reads it on the same worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("infra-synth")

TABLE_KEYS = {  # table -> (partition key, sort key)
    names.PAYMENT_EVENTS: ("checkout_id", None),
    names.PAYMENT_ORDERS: ("payment_order_id", None),
    names.WALLET: ("account_id", "sk"),
    names.LEDGER: ("transaction_id", None),
    names.RECON: ("pk", "sk"),
    names.CHARGES: ("charge_key", None),
    names.SELLERS: ("seller_account", None),
    names.PAYOUTS: ("payment_order_id", None),
}
MAIN_QUEUES = {  # queue -> its dead-letter queue
    names.ORDERS_QUEUE: names.ORDERS_DLQ,
    names.RECON_QUEUE: names.RECON_DLQ,
    names.REVIEW_QUEUE: names.REVIEW_DLQ,
    names.PAYOUTS_QUEUE: names.PAYOUTS_DLQ,
}
DLQS = [names.ORDERS_DLQ, names.WORKFLOW_DLQ, names.RECON_DLQ, names.REVIEW_DLQ, names.PAYOUTS_DLQ]
TABLE_ENV = {
    "PAYMENT_EVENTS_TABLE": names.PAYMENT_EVENTS,
    "PAYMENT_ORDERS_TABLE": names.PAYMENT_ORDERS,
    "WALLET_TABLE": names.WALLET,
    "LEDGER_TABLE": names.LEDGER,
    "RECON_TABLE": names.RECON,
    "CHARGES_TABLE": names.CHARGES,
    "SELLERS_TABLE": names.SELLERS,
    "PAYOUTS_TABLE": names.PAYOUTS,
}
EXTRA_ENV = {  # function -> env vars beyond the table names and POWERTOOLS_* (docs/design.md names)
    # PSP_ROUTING: it routes each charge; the two Adyen names: what its settings check a rule naming Adyen against
    "PaymentApi": {"ORDERS_QUEUE_URL", "PAYOUTS_QUEUE_URL", "NOTIFICATION_ENDPOINTS_TABLE", "REFUNDS_TABLE",
                   "REFUNDS_QUEUE_URL", "PSP_ROUTING", "ADYEN_MERCHANT_ACCOUNT", "ADYEN_API_KEY_PARAMETER",
                   "PSP_HEALTH_TABLE"},
    "OrderStarter": {"STATE_MACHINE_ARN"},
    "Executor": {"PSP_API_BASE", "PSP_API_KEY_PARAMETER", "PSP_HEALTH_TABLE", "ADYEN_API_KEY_PARAMETER",
                 "ADYEN_MERCHANT_ACCOUNT", "ADYEN_ENVIRONMENT", "ADYEN_LIVE_PREFIX", "ADYEN_CHECKOUT_BASE"},
    "Wallet": set(),
    "Ledger": set(),
    "Finalize": set(),
    "Sweeper": {"ORDERS_QUEUE_URL", "WORKFLOW_DLQ_URL", "STATE_MACHINE_ARN", "PAYOUTS_QUEUE_URL", "PAYOUTS_DLQ_URL"},
    "Recon": {"SETTLEMENT_BUCKET", "REVIEW_QUEUE_URL", "STATE_MACHINE_ARN", "ORDERS_QUEUE_URL"},
    "Transfer": {"PSP_API_BASE", "PSP_API_KEY_PARAMETER", "PAYOUTS_QUEUE_URL", "PAYOUTS_DLQ_URL"},
    "WebhookReceiver": {"WEBHOOK_QUEUE_URL", "WEBHOOK_SECRET_PARAMETER", "ADYEN_HMAC_KEY_PARAMETER",
                        "ADYEN_MERCHANT_ACCOUNT"},
    "WebhookProcessor": {"WEBHOOK_EVENTS_TABLE", "PAYOUTS_QUEUE_URL", "REVIEW_QUEUE_URL", "REFUNDS_TABLE",
                         "REFUNDS_QUEUE_URL", "PSP_API_BASE", "PSP_API_KEY_PARAMETER"},
    "Notifier": {"NOTIFICATIONS_QUEUE_URL", "REFUNDS_TABLE"},
    "Deliverer": {"NOTIFICATION_ENDPOINTS_TABLE", "NOTIFICATIONS_QUEUE_URL", "NOTIFICATIONS_DLQ_URL"},
    "RefundWorker": {"PSP_API_BASE", "PSP_API_KEY_PARAMETER", "REFUNDS_TABLE", "REFUNDS_QUEUE_URL",
                     "REFUNDS_DLQ_URL", "ADYEN_API_KEY_PARAMETER", "ADYEN_MERCHANT_ACCOUNT", "ADYEN_ENVIRONMENT",
                     "ADYEN_LIVE_PREFIX", "ADYEN_CHECKOUT_BASE"},
    "ApiAuthorizer": {"API_KEYS_TABLE", "API_RATE_WINDOWS_TABLE"},
    "InternalRecon": {"SETTLEMENT_BUCKET", "REFUNDS_TABLE"},
}
# Disputes (infra/constructs/disputes.py): the processor applies them, PaymentApi shows them, the Notifier names
# their stream's table.
for _fn in ("PaymentApi", "WebhookProcessor", "Notifier"):
    EXTRA_ENV[_fn] = EXTRA_ENV[_fn] | {"DISPUTES_TABLE"}


@pytest.fixture(scope="module")
def template(synth) -> Template:
    return Template.from_json(synth.template)


def table_id(synth, table: str) -> str:
    return synth.logical_id("AWS::DynamoDB::Table", f"{names.TABLES}{table}")


def queue_id(synth, queue: str) -> str:
    return synth.logical_id("AWS::SQS::Queue", f"{names.QUEUES}{queue}")


def function_id(synth, spec: names.FunctionSpec) -> str:
    return synth.logical_id("AWS::Lambda::Function", f"{names.FUNCTIONS}{spec.name}")


# --- tables -------------------------------------------------------------------------------------------------


def test_there_are_exactly_the_fifteen_tables_and_no_global_table(template):
    # + WebhookEvents, NotificationEndpoints, Refunds, Disputes, ApiKeys, ApiRateWindows, PspHealth
    template.resource_count_is("AWS::DynamoDB::Table", 8 + 3 + 1 + 2 + 1)
    template.resource_count_is("AWS::DynamoDB::GlobalTable", 0)


@pytest.mark.parametrize("table", sorted(TABLE_KEYS))
def test_each_table_has_its_keys_on_demand_billing_pitr_and_is_retained(synth, table):
    lid = table_id(synth, table)
    resource = synth.resources[lid]
    props = resource["Properties"]
    pk, sk = TABLE_KEYS[table]
    expected_keys = [{"AttributeName": pk, "KeyType": "HASH"}]
    if sk:
        expected_keys.append({"AttributeName": sk, "KeyType": "RANGE"})
    assert props["KeySchema"] == expected_keys
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"


def test_the_psp_health_table_is_keyed_by_psp_and_goes_with_the_stack(synth):
    """A circuit breaker's state: nothing to restore (no point-in-time recovery), deleted with the stack."""
    resource = synth.resources[table_id(synth, names.PSP_HEALTH)]
    assert resource["Properties"]["KeySchema"] == [{"AttributeName": "psp", "KeyType": "HASH"}]
    assert resource["Properties"]["BillingMode"] == "PAY_PER_REQUEST"
    assert "PointInTimeRecoverySpecification" not in resource["Properties"]
    assert resource["DeletionPolicy"] == "Delete"
    assert moto_tables.TABLE_KEYS["PspHealth"] == {"hash": "psp"}


def test_charges_have_the_keys_only_sweep_index_the_sweeper_reads_and_the_receipts_index_recon_reads(synth):
    props = synth.props(table_id(synth, names.CHARGES))
    sweep, receipts = props["GlobalSecondaryIndexes"]
    assert sweep == {"IndexName": names.SWEEP_INDEX, "Projection": {"ProjectionType": "KEYS_ONLY"},
                     "KeySchema": [{"AttributeName": "sweep_shard", "KeyType": "HASH"},
                                   {"AttributeName": "due_at", "KeyType": "RANGE"}]}
    assert receipts == {"IndexName": names.RECEIPTS_INDEX, "Projection": {"ProjectionType": "KEYS_ONLY"},
                        "KeySchema": [{"AttributeName": "receipt_day", "KeyType": "HASH"},
                                      {"AttributeName": "charge_key", "KeyType": "RANGE"}]}
    assert moto_tables.TABLE_KEYS["Charges"]["gsi"] == {names.SWEEP_INDEX: ("sweep_shard", "due_at"),
                                                        names.RECEIPTS_INDEX: ("receipt_day", "charge_key")}


def test_payment_orders_has_the_keys_only_created_and_reference_indexes_and_no_sweep_index(synth):
    """No sweep index on the orders: nothing reads it (the sweeper reads the charges'), and it cost two index
    writes per order (docs/decisions.md 2026-12-06)."""
    props = synth.props(table_id(synth, names.PAYMENT_ORDERS))
    indexes = {index["IndexName"]: index for index in props["GlobalSecondaryIndexes"]}
    assert set(indexes) == {names.CREATED_INDEX, names.REFERENCE_INDEX} == set(
        moto_tables.TABLE_KEYS["PaymentOrders"]["gsi"])  # the tests' moto tables have the same indexes
    for name, (hash_key, range_key) in moto_tables.TABLE_KEYS["PaymentOrders"]["gsi"].items():
        schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        if range_key:
            schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
        assert indexes[name] == {"IndexName": name, "KeySchema": schema, "Projection": {"ProjectionType": "KEYS_ONLY"}}
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert types == {"payment_order_id": "S", "created_bucket": "S", "created_at": "S", "psp_reference": "S"}


def test_ledger_has_the_keys_only_sparse_index_of_transactions_by_order(synth):
    props = synth.props(table_id(synth, names.LEDGER))
    assert props["GlobalSecondaryIndexes"] == [{
        "IndexName": names.LEDGER_ORDER_INDEX, "KeySchema": [{"AttributeName": "payment_order_id", "KeyType": "HASH"}],
        "Projection": {"ProjectionType": "KEYS_ONLY"}}]
    assert moto_tables.TABLE_KEYS["Ledger"]["gsi"] == {names.LEDGER_ORDER_INDEX: ("payment_order_id", None)}
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert types == {"transaction_id": "S", "payment_order_id": "S"}


def _indexes(props: dict) -> dict[str, tuple[str, str | None, str]]:
    """index name -> (hash key, range key, projection) of a synthesized table."""
    found = {}
    for index in props["GlobalSecondaryIndexes"]:
        keys = {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
        found[index["IndexName"]] = (keys["HASH"], keys.get("RANGE"), index["Projection"]["ProjectionType"])
    return found


def test_payouts_have_the_sparse_sweep_transferred_and_awaiting_indexes(synth):
    indexes = _indexes(synth.props(table_id(synth, names.PAYOUTS)))
    assert indexes == {
        names.SWEEP_INDEX: ("sweep_shard", "due_at", "KEYS_ONLY"),
        names.TRANSFERRED_INDEX: ("transferred_bucket", "transferred_at", "KEYS_ONLY"),
        names.AWAITING_INDEX: ("awaiting_seller", None, "KEYS_ONLY"),
    }
    assert {name: (h, r) for name, (h, r, _) in indexes.items()} == moto_tables.TABLE_KEYS["Payouts"]["gsi"]


def test_wallet_has_the_statement_index_of_movements_by_shard_and_time(synth):
    props = synth.props(table_id(synth, names.WALLET))
    assert props["GlobalSecondaryIndexes"] == [{
        "IndexName": names.WALLET_STATEMENT_INDEX, "Projection": {"ProjectionType": "ALL"},
        "KeySchema": [{"AttributeName": "statement_key", "KeyType": "HASH"},
                      {"AttributeName": "created_at", "KeyType": "RANGE"}]}]
    assert moto_tables.TABLE_KEYS["Wallet"]["gsi"] == {names.WALLET_STATEMENT_INDEX: ("statement_key", "created_at")}
    assert moto_tables.TABLE_KEYS["Wallet"]["projection"] == {names.WALLET_STATEMENT_INDEX: "ALL"}


# --- queues -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("queue", sorted(MAIN_QUEUES))
def test_each_main_queue_moves_a_message_to_its_own_dlq_after_five_receives(synth, queue):
    props = synth.props(queue_id(synth, queue))
    assert props["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [queue_id(synth, MAIN_QUEUES[queue]), "Arn"]},
        "maxReceiveCount": 5,
    }


@pytest.mark.parametrize("dlq", DLQS)
def test_each_dlq_keeps_messages_14_days_and_has_no_dlq_of_its_own(synth, dlq):
    props = synth.props(queue_id(synth, dlq))
    assert props["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert "RedrivePolicy" not in props


def test_queue_visibility_covers_the_consumer_timeout(synth):
    assert synth.props(queue_id(synth, names.ORDERS_QUEUE))["VisibilityTimeout"] >= names.ORDER_STARTER.timeout_s
    assert synth.props(queue_id(synth, names.RECON_QUEUE))["VisibilityTimeout"] >= names.RECON_FN.timeout_s
    assert synth.props(queue_id(synth, names.PAYOUTS_QUEUE))["VisibilityTimeout"] > names.TRANSFER.timeout_s


@pytest.mark.parametrize("queue", sorted(names.OUT_QUEUE_URLS))
def test_every_queue_is_encrypted_and_refuses_plain_http(synth, queue):
    lid = queue_id(synth, queue)
    assert synth.props(lid)["SqsManagedSseEnabled"] is True
    policies = [p for p in synth.of_type("AWS::SQS::QueuePolicy").values() if {"Ref": lid} in p["Properties"]["Queues"]]
    (policy,) = policies
    denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)


# --- settlement bucket --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket_id(synth) -> str:
    return synth.logical_id("AWS::S3::Bucket", f"{names.SETTLEMENT}{names.SETTLEMENT_BUCKET}")


def test_bucket_is_private_versioned_encrypted_and_ssl_only(synth, template, bucket_id):
    props = synth.props(bucket_id)
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            },
        },
    )
    assert synth.resources[bucket_id]["DeletionPolicy"] == "Retain"


def test_new_objects_under_incoming_notify_the_recon_queue(synth, bucket_id):
    config = synth.props(bucket_id)["NotificationConfiguration"]
    assert config == {
        "QueueConfigurations": [
            {
                "Event": "s3:ObjectCreated:*",
                "Queue": {"Fn::GetAtt": [queue_id(synth, names.RECON_QUEUE), "Arn"]},
                "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": "incoming/"}]}},
            }
        ]
    }


def test_recon_queue_admits_only_this_bucket_and_the_bucket_waits_for_that_policy(synth, bucket_id):
    recon_queue = queue_id(synth, names.RECON_QUEUE)
    (policy_id,) = [
        lid
        for lid, p in synth.of_type("AWS::SQS::QueuePolicy").items()
        if {"Ref": recon_queue} in p["Properties"]["Queues"]
    ]
    statements = synth.props(policy_id)["PolicyDocument"]["Statement"]
    (from_s3,) = [s for s in statements if s.get("Principal") == {"Service": "s3.amazonaws.com"}]
    assert from_s3["Effect"] == "Allow" and from_s3["Action"] == "sqs:SendMessage"
    # The policy names the bucket by the same name the bucket gets (no reference: that would be a cycle).
    bucket_name = render(synth.props(bucket_id)["BucketName"])
    assert render(from_s3["Condition"]["ArnEquals"]["aws:SourceArn"]) == f"arn:<AWS::Partition>:s3:::{bucket_name}"
    assert from_s3["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert policy_id in synth.resources[bucket_id]["DependsOn"]


# --- functions ----------------------------------------------------------------------------------------------


def test_there_are_exactly_the_functions_of_the_design(synth):
    handlers = {r["Properties"]["Handler"] for r in synth.of_type("AWS::Lambda::Function").values()}
    assert handlers == {f.handler for f in names.ALL_FUNCTIONS}
    # + the webhooks' two, Notifier, Deliverer, RefundWorker, ApiAuthorizer, InternalRecon
    assert len(synth.of_type("AWS::Lambda::Function")) == 9 + 2 + 2 + 1 + 1 + 1


@pytest.mark.parametrize("function", names.ALL_FUNCTIONS, ids=lambda f: f.name)
def test_each_function_runs_python_313_on_arm_with_the_base_layer_first(synth, function):
    props = synth.props(function_id(synth, function))
    assert props["Handler"] == function.handler
    assert props["Runtime"] == "python3.13"
    assert props["Architectures"] == ["arm64"]
    assert props["MemorySize"] == function.memory_mb
    assert props["Timeout"] == function.timeout_s
    layers = [synth.resources[ref["Ref"]]["Metadata"][LAYER_METADATA] for ref in props["Layers"]]
    assert layers == [BASE_LAYER, *EXTRA_LAYERS.get(function.name, ())]


def test_timeouts_and_memory_follow_the_brief():
    # The workflow's tasks are sized by the 300 s budget (test_workflow_budget.py); the executor makes at most
    # two PSP calls of psp_timeout_s each.
    assert names.EXECUTOR.timeout_s == 20 and 2 * Settings.model_fields["psp_timeout_s"].default < 20
    assert (names.RECON_FN.timeout_s, names.RECON_FN.memory_mb) == (900, 1769)
    assert all(f.timeout_s == 8 for f in (names.WALLET_FN, names.LEDGER_FN, names.FINALIZE))
    assert (names.PAYMENT_API.timeout_s, names.ORDER_STARTER.timeout_s, names.SWEEPER.timeout_s) == (10, 30, 60)
    assert names.TRANSFER.timeout_s == 30 and 2 * Settings.model_fields["psp_timeout_s"].default < 30
    assert all(f.memory_mb == 256 for f in names.ALL_FUNCTIONS if f is not names.RECON_FN)


def test_the_functions_every_order_runs_log_at_warning_with_sampling():
    hot = {f.name for f in names.ALL_FUNCTIONS if f.hot_path}
    assert hot == {"PaymentApi", "ApiAuthorizer", "OrderStarter", "Executor", "Wallet", "Ledger", "Finalize",
                   "WebhookReceiver", "WebhookProcessor", "Notifier", "Deliverer"}


@pytest.mark.parametrize("function", names.ALL_FUNCTIONS, ids=lambda f: f.name)
def test_each_function_gets_the_env_vars_of_the_design(synth, function):
    env = synth.props(function_id(synth, function))["Environment"]["Variables"]
    for var, table in TABLE_ENV.items():
        assert env[var] == {"Ref": table_id(synth, table)}
    assert env["POWERTOOLS_SERVICE_NAME"] == function.service
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "MarketPay"
    # explicit, not Powertools' default; on the order's path WARNING with 1 invocation in 100 at DEBUG
    assert env["POWERTOOLS_LOG_LEVEL"] == ("WARNING" if function.hot_path else "INFO")
    assert env["POWERTOOLS_LOGGER_SAMPLE_RATE"] == ("0.01" if function.hot_path else "0")
    assert (
        set(env) - set(TABLE_ENV) - {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL",
                                     "POWERTOOLS_LOGGER_SAMPLE_RATE"}
        == EXTRA_ENV[function.name]
    )


def test_env_values_point_at_the_right_resources(synth):
    (machine,) = synth.of_type("AWS::StepFunctions::StateMachine")
    bucket = synth.logical_id("AWS::S3::Bucket", f"{names.SETTLEMENT}{names.SETTLEMENT_BUCKET}")
    env = {f.name: synth.props(function_id(synth, f))["Environment"]["Variables"] for f in names.ALL_FUNCTIONS}
    assert env["PaymentApi"]["ORDERS_QUEUE_URL"] == {"Ref": queue_id(synth, names.ORDERS_QUEUE)}
    assert env["Sweeper"]["WORKFLOW_DLQ_URL"] == {"Ref": queue_id(synth, names.WORKFLOW_DLQ)}
    assert env["Recon"]["REVIEW_QUEUE_URL"] == {"Ref": queue_id(synth, names.REVIEW_QUEUE)}
    assert env["Recon"]["SETTLEMENT_BUCKET"] == {"Ref": bucket}
    for starter in ("OrderStarter", "Sweeper", "Recon"):
        assert env[starter]["STATE_MACHINE_ARN"] == {"Ref": machine}
    # Deployed: the real Stripe API, its key from the SSM SecureString.
    assert env["Executor"]["PSP_API_BASE"] == ""
    assert env["Executor"]["PSP_API_KEY_PARAMETER"] == "/marketpay/stripe/secret-key"
    assert env["Transfer"]["PSP_API_BASE"] == ""
    assert env["Transfer"]["PSP_API_KEY_PARAMETER"] == "/marketpay/stripe/secret-key"
    # Adyen by default: its test platform at its own URL, no merchant account, and no rule routes to it.
    for caller in ("Executor", "RefundWorker"):  # the two functions that call Adyen's Checkout API
        assert {k: v for k, v in env[caller].items() if k.startswith("ADYEN_")} == {
            "ADYEN_API_KEY_PARAMETER": "/marketpay/adyen/api-key", "ADYEN_MERCHANT_ACCOUNT": "",
            "ADYEN_ENVIRONMENT": "test", "ADYEN_LIVE_PREFIX": "", "ADYEN_CHECKOUT_BASE": ""}
    assert env["PaymentApi"]["PSP_ROUTING"] == ""
    for fn in ("PaymentApi", "Sweeper", "Transfer"):
        assert env[fn]["PAYOUTS_QUEUE_URL"] == {"Ref": queue_id(synth, names.PAYOUTS_QUEUE)}
    for fn in ("Sweeper", "Transfer"):
        assert env[fn]["PAYOUTS_DLQ_URL"] == {"Ref": queue_id(synth, names.PAYOUTS_DLQ)}


@pytest.mark.parametrize("function", names.ALL_FUNCTIONS, ids=lambda f: f.name)
def test_each_function_logs_to_its_own_explicit_log_group(synth, function):
    props = synth.props(function_id(synth, function))
    group = props["LoggingConfig"]["LogGroup"]["Ref"]
    assert synth.resources[group]["Type"] == "AWS::Logs::LogGroup"
    assert synth.props(group)["RetentionInDays"] == 30
    others = [
        f
        for f in names.ALL_FUNCTIONS
        if f != function and synth.props(function_id(synth, f))["LoggingConfig"]["LogGroup"]["Ref"] == group
    ]
    assert not others


# --- triggers -----------------------------------------------------------------------------------------------


def test_orders_queue_feeds_the_order_starter_in_batches_with_partial_failures(synth, template):
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": [queue_id(synth, names.ORDERS_QUEUE), "Arn"]},
            "FunctionName": {"Ref": function_id(synth, names.ORDER_STARTER)},
            "BatchSize": 10,
            "MaximumBatchingWindowInSeconds": 1,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    )


def test_recon_queue_feeds_recon_one_file_at_a_time(synth, template):
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": [queue_id(synth, names.RECON_QUEUE), "Arn"]},
            "FunctionName": {"Ref": function_id(synth, names.RECON_FN)},
            "BatchSize": 1,
        },
    )
    # + WebhookProcessor, Deliverer, four streams (Notifier: orders, pay-outs, refunds, disputes), RefundWorker
    template.resource_count_is("AWS::Lambda::EventSourceMapping", 3 + 1 + 4 + 1 + 1)


def test_payouts_queue_feeds_transfer_in_batches_with_partial_failures(synth, template):
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": [queue_id(synth, names.PAYOUTS_QUEUE), "Arn"]},
            "FunctionName": {"Ref": function_id(synth, names.TRANSFER)},
            "BatchSize": 10,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    )


def test_the_sweeper_runs_every_minute(synth, template):
    sweeper = function_id(synth, names.SWEEPER)
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(1 minute)",
            "State": "ENABLED",
            "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [sweeper, "Arn"]}})],
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {"FunctionName": {"Fn::GetAtt": [sweeper, "Arn"]}, "Principal": "events.amazonaws.com"},
    )


# --- API ----------------------------------------------------------------------------------------------------


def test_http_api_routes_all_go_to_payment_api_with_payload_2(synth, template):
    """Every route but the webhooks' (tests/infra/test_webhooks.py)."""
    (integration,) = [lid for lid, r in synth.of_type("AWS::ApiGatewayV2::Integration").items()
                      if r["Properties"]["IntegrationUri"] == {"Fn::GetAtt": [function_id(synth, names.PAYMENT_API),
                                                                              "Arn"]}]
    template.has_resource_properties(
        "AWS::ApiGatewayV2::Integration",
        {
            "IntegrationType": "AWS_PROXY",
            "PayloadFormatVersion": "2.0",
            "IntegrationUri": {"Fn::GetAtt": [function_id(synth, names.PAYMENT_API), "Arn"]},
        },
    )
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]["Target"]
        for r in synth.of_type("AWS::ApiGatewayV2::Route").values()
        if r["Properties"]["RouteKey"] not in (f"POST {names.WEBHOOK_PATH}", f"POST {names.ADYEN_WEBHOOK_PATH}")
    }
    # each route, and per path an ANY route that answers 405 for the methods the path lacks
    assert set(routes) == {f"{method} {path}" for method, path in names.ROUTES} | {
        f"ANY {path}" for _, path in names.ROUTES}
    assert all(render(target) == f"integrations/{integration}" for target in routes.values())
    template.has_resource_properties("AWS::ApiGatewayV2::Api", {"ProtocolType": "HTTP"})


def test_the_default_stage_deploys_itself_and_is_throttled(synth):
    (stage,) = synth.of_type("AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == "$default" and props["AutoDeploy"] is True
    throttle = props["DefaultRouteSettings"]
    assert throttle["ThrottlingRateLimit"] > 0 and throttle["ThrottlingBurstLimit"] > 0
    assert "DestinationArn" in props["AccessLogSettings"]


# --- alarms -------------------------------------------------------------------------------------------------


def alarms(synth) -> list[dict]:
    return [r["Properties"] for r in synth.of_type("AWS::CloudWatch::Alarm").values()]


def alarms_on(synth, metric: str, dimension: str, target: dict) -> list[dict]:
    return [
        a
        for a in alarms(synth)
        if a.get("MetricName") == metric and {"Name": dimension, "Value": target} in a.get("Dimensions", [])
    ]


def assert_fires_above_zero_to_the_topic(synth, alarm: dict) -> None:
    (topic,) = synth.of_type("AWS::SNS::Topic")
    assert alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [{"Ref": topic}]


@pytest.mark.parametrize("queue", [*DLQS, names.REVIEW_QUEUE])
def test_a_message_in_any_dlq_or_the_review_queue_raises_an_alarm(synth, queue):
    (alarm,) = alarms_on(
        synth,
        "ApproximateNumberOfMessagesVisible",
        "QueueName",
        {"Fn::GetAtt": [queue_id(synth, queue), "QueueName"]},
    )
    assert alarm["Namespace"] == "AWS/SQS"
    assert_fires_above_zero_to_the_topic(synth, alarm)


@pytest.mark.parametrize("metric", ["ExecutionsFailed", "ExecutionsTimedOut"])
def test_failed_or_timed_out_workflows_raise_an_alarm(synth, metric):
    (machine,) = synth.of_type("AWS::StepFunctions::StateMachine")
    (alarm,) = alarms_on(synth, metric, "StateMachineArn", {"Ref": machine})
    assert alarm["Namespace"] == "AWS/States"
    assert_fires_above_zero_to_the_topic(synth, alarm)


# Each function's errors: an error-rate alarm (metric math), tests/infra/test_observability.py.


# --- outputs and forbidden resources ------------------------------------------------------------------------


def test_outputs_are_exactly_those_the_local_stack_and_ops_read(synth):
    expected = {
        "ApiUrl",
        "SettlementBucketName",
        "OrdersQueueUrl",
        "OrdersDlqUrl",
        "WorkflowDlqUrl",
        "ReconQueueUrl",
        "ReconDlqUrl",
        "ReviewQueueUrl",
        "ReviewDlqUrl",
        "StateMachineArn",
        "PaymentEventsTableName",
        "PaymentOrdersTableName",
        "WalletTableName",
        "LedgerTableName",
        "ReconTableName",
        "ChargesTableName",
        "SellersTableName",
        "PayoutsTableName",
        "PspHealthTableName",
        "PayoutsQueueUrl",
        "PayoutsDlqUrl",
        "AlarmTopicArn",
        "WebhookQueueUrl",
        "WebhookDlqUrl",
        "WebhookEventsTableName",
        *names.OUT_NOTIFICATION_QUEUE_URLS.values(),
        names.OUT_NOTIFICATION_ENDPOINTS_TABLE,
        "RefundsTableName",
        "RefundsQueueUrl",
        "RefundsDlqUrl",
        names.OUT_DISPUTES_TABLE,
        names.OUT_API_KEYS_TABLE,
    }
    assert set(synth.template["Outputs"]) == expected


def test_outputs_point_at_their_resources(synth):
    outputs = {k: v["Value"] for k, v in synth.template["Outputs"].items()}
    for queue, output in names.OUT_QUEUE_URLS.items():
        assert outputs[output] == {"Ref": queue_id(synth, queue)}
    for table, output in names.OUT_TABLE_NAMES.items():
        assert outputs[output] == {"Ref": table_id(synth, table)}
    (machine,) = synth.of_type("AWS::StepFunctions::StateMachine")
    assert outputs["StateMachineArn"] == {"Ref": machine}
    (api,) = synth.of_type("AWS::ApiGatewayV2::Api")
    assert render(outputs["ApiUrl"]).startswith(f"https://{api}.execute-api.")


def test_no_custom_resources_anywhere(synth):
    kinds = {r["Type"] for r in synth.resources.values()}
    assert not {k for k in kinds if k.startswith("Custom::") or k == "AWS::CloudFormation::CustomResource"}
    assert "AWS::DynamoDB::GlobalTable" not in kinds


# --- internal reconciliation (issue 19) ---------------------------------------------------------------------


def test_internal_recon_runs_nightly_on_its_schedule(synth, template):
    recon = function_id(synth, names.INTERNAL_RECON)
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "cron(30 2 * * ? *)",
            "State": "ENABLED",
            "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [recon, "Arn"]}})],
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {"FunctionName": {"Fn::GetAtt": [recon, "Arn"]}, "Principal": "events.amazonaws.com"},
    )
    env = synth.props(recon)["Environment"]["Variables"]
    assert {"SETTLEMENT_BUCKET", "REFUNDS_TABLE", "PAYOUTS_TABLE", "WALLET_TABLE", "LEDGER_TABLE"} <= set(env)


def test_unexplained_internal_recon_findings_raise_an_alarm(synth):
    (alarm,) = alarms_on(synth, names.UNEXPLAINED_FINDINGS_METRIC, "service", names.INTERNAL_RECON.service)
    assert alarm["Namespace"] == names.METRICS_NAMESPACE
    assert alarm["Period"] == 86400 and alarm["Statistic"] == "Maximum"
    assert_fires_above_zero_to_the_topic(synth, alarm)
