"""Webhooks in, as synthesized: the unauthenticated route to the receiver, the queue with its DLQ and alarm, the
processor's partial batch responses, the dedupe table's TTL, and the sellers' account index."""

from __future__ import annotations

import pytest

from infra import names
from tests.infra.support import render

pytestmark = pytest.mark.xdist_group("infra-synth")


def _id(synth, kind: str, name: str) -> str:
    return synth.logical_id(kind, f"{names.WEBHOOKS}{name}")


def _function(synth, spec: names.FunctionSpec) -> str:
    return synth.logical_id("AWS::Lambda::Function", f"{names.FUNCTIONS}{spec.name}")


@pytest.mark.parametrize("path", [names.WEBHOOK_PATH, names.ADYEN_WEBHOOK_PATH])
def test_the_route_goes_to_the_receiver_with_payload_2_and_no_authorizer(synth, path):
    [route] = [r["Properties"] for r in synth.of_type("AWS::ApiGatewayV2::Route").values()
               if r["Properties"]["RouteKey"] == f"POST {path}"]
    assert route.get("AuthorizationType", "NONE") == "NONE" and "AuthorizerId" not in route
    integration = render(route["Target"]).removeprefix("integrations/")
    props = synth.props(integration)
    assert props["PayloadFormatVersion"] == "2.0"
    assert props["IntegrationUri"] == {"Fn::GetAtt": [_function(synth, names.WEBHOOK_RECEIVER), "Arn"]}


def test_the_receiver_knows_its_queue_and_secret_parameter_only(synth):
    env = synth.props(_function(synth, names.WEBHOOK_RECEIVER))["Environment"]["Variables"]
    assert env[names.ENV_WEBHOOK_SECRET_PARAMETER] == names.DEFAULT_WEBHOOK_SECRET_PARAMETER
    assert env[names.ENV_WEBHOOK_QUEUE_URL] == {"Ref": _id(synth, "AWS::SQS::Queue", names.WEBHOOK_QUEUE)}
    assert env[names.ENV_ADYEN_HMAC_KEY_PARAMETER] == names.DEFAULT_ADYEN_HMAC_KEY_PARAMETER
    assert env[names.ENV_ADYEN_MERCHANT_ACCOUNT] == ""  # the context's; an item for another account is dropped
    assert names.ENV_PSP_API_KEY_PARAMETER not in env


def test_the_queue_dead_letters_after_max_receives_and_its_dlq_is_alarmed(synth):
    queue = synth.props(_id(synth, "AWS::SQS::Queue", names.WEBHOOK_QUEUE))
    dlq = _id(synth, "AWS::SQS::Queue", names.WEBHOOK_DLQ)
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]},
                                      "maxReceiveCount": names.MAX_RECEIVE_COUNT}
    assert queue["VisibilityTimeout"] == 6 * names.WEBHOOK_PROCESSOR.timeout_s
    queue_name = {"Fn::GetAtt": [dlq, "QueueName"]}
    alarms = [a["Properties"] for a in synth.of_type("AWS::CloudWatch::Alarm").values()
              if any(d.get("Value") == queue_name for d in a["Properties"].get("Dimensions", []))]
    assert len(alarms) == 1 and alarms[0]["Threshold"] == 0


def test_the_processor_consumes_in_batches_with_partial_failures(synth):
    [mapping] = [m["Properties"] for m in synth.of_type("AWS::Lambda::EventSourceMapping").values()
                 if m["Properties"]["FunctionName"] == {"Ref": _function(synth, names.WEBHOOK_PROCESSOR)}]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [_id(synth, "AWS::SQS::Queue", names.WEBHOOK_QUEUE), "Arn"]}
    assert mapping["BatchSize"] == 10 and mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_events_table_expires_items_and_is_retained(synth):
    lid = _id(synth, "AWS::DynamoDB::Table", names.WEBHOOK_EVENTS)
    props = synth.props(lid)
    assert props["KeySchema"] == [{"AttributeName": "event_id", "KeyType": "HASH"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": names.WEBHOOK_TTL_ATTRIBUTE, "Enabled": True}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert synth.resources[lid]["DeletionPolicy"] == "Retain"


def test_sellers_have_a_keys_only_index_by_connected_account(synth):
    from tests.support import aws as moto_tables

    props = synth.props(synth.logical_id("AWS::DynamoDB::Table", f"{names.TABLES}{names.SELLERS}"))
    [index] = props["GlobalSecondaryIndexes"]
    assert index == {"IndexName": names.SELLER_ACCOUNT_INDEX, "Projection": {"ProjectionType": "KEYS_ONLY"},
                     "KeySchema": [{"AttributeName": "psp_account_id", "KeyType": "HASH"}]}
    assert moto_tables.TABLE_KEYS["Sellers"]["gsi"] == {names.SELLER_ACCOUNT_INDEX: ("psp_account_id", None)}


@pytest.mark.parametrize("metric_name", ["RefundMismatch", "RefundFailedAfterSuccess", "RefundWaitingOnPayout",
                                         "RefundNotificationOverdue", names.OWED_METRIC])
def test_refund_path_alarms_hear_both_functions_that_run_the_path(synth, metric_name):
    """The refund path runs in RefundWorker and in WebhookProcessor (the PSP's refund events): an alarm on one
    service dimension only would miss what the other one counts."""
    alarms = [a["Properties"] for a in synth.of_type("AWS::CloudWatch::Alarm").values()
              if any(q.get("MetricStat", {}).get("Metric", {}).get("MetricName") == metric_name
                     for q in a["Properties"].get("Metrics", []))]
    assert len(alarms) == 1, metric_name
    services = {d["Value"] for q in alarms[0]["Metrics"] if "MetricStat" in q
                for d in q["MetricStat"]["Metric"]["Dimensions"] if d["Name"] == "service"}
    assert services == {names.REFUND_WORKER.service, names.WEBHOOK_PROCESSOR.service}
    assert alarms[0]["AlarmActions"], "an alarm that tells no one"
