"""Drift: everything the synthesized template wires is served by the local runtime.

Runs against the real cdk.out (CDK_OUTDIR, default <repo>/cdk.out); `make test` synthesizes it first.
"""

import json
import os
import urllib.request
from pathlib import Path

import pytest

from local.deploy import bucket_notification_configs
from local.moto_server import free_port
from local.stack import REPO_ROOT, LocalStack, Ports, default_sandbox
from local.template import lambda_targets_in_definition

CDK_OUT = Path(os.environ.get("CDK_OUTDIR", REPO_ROOT / "cdk.out"))
STACK = "MarketPay"

pytestmark = pytest.mark.skipif(
    not (CDK_OUT / f"{STACK}.template.json").exists(),
    reason=f"no {CDK_OUT}/{STACK}.template.json yet: run `python infra/app.py` (make synth) first",
)


def _sandbox_available() -> bool:
    try:
        import psp_sandbox.server  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def real_stack():
    stack = LocalStack(
        cdk_out=CDK_OUT,
        stack_name=STACK,
        ports=Ports(aws=free_port(), api=free_port(), psp=free_port()),
        sandbox=default_sandbox if _sandbox_available() else None,
    )
    with stack:
        yield stack


def test_every_route_is_served_by_the_gateway(real_stack):
    template, deployed = real_stack.deployed.template, real_stack.deployed
    served = {r.route_key: r.function_arn for r in real_stack.gateway.routes}
    routes = template.of_type("AWS::ApiGatewayV2::Route")
    assert routes, "the template has no HTTP API routes"
    for lid, route in routes.items():
        key = route["Properties"]["RouteKey"]
        target = route["Properties"]["Target"]
        integration_id = next(p["Ref"] for p in target["Fn::Join"][1] if isinstance(p, dict))
        expected = deployed.resolve(template.props(integration_id)["IntegrationUri"])
        assert served.get(key) == expected, f"route {lid} {key}"
        assert template.props(integration_id).get("PayloadFormatVersion") == "2.0"


def test_every_event_source_mapping_has_a_poller(real_stack):
    template, deployed = real_stack.deployed.template, real_stack.deployed
    pollers = {m.logical_id: m for m in real_stack.events.mappings}
    for lid in template.of_type("AWS::Lambda::EventSourceMapping"):
        props = template.props(lid)
        if ":dynamodb:" in deployed.resolve(props["EventSourceArn"]):
            continue  # a table's stream: test_every_stream_mapping_has_a_poller
        poller = pollers[lid]
        assert poller.queue_arn == deployed.resolve(props["EventSourceArn"])
        assert poller.function_name == deployed.resolve(props["FunctionName"]).split(":")[-1]
        assert poller.batch_size == int(props.get("BatchSize", 10))
        reports = "ReportBatchItemFailures" in props.get("FunctionResponseTypes", [])
        assert poller.report_batch_item_failures == reports
    # and moto's own synchronous SQS trigger is off
    from moto.sqs.models import sqs_backends

    assert all(not q.lambda_event_source_mappings for q in sqs_backends["123456789012"]["us-east-1"].queues.values())


def test_every_stream_mapping_has_a_poller(real_stack):
    template, deployed = real_stack.deployed.template, real_stack.deployed
    pollers = {m.logical_id: m for m in real_stack.events.streams}
    streamed = [lid for lid in template.of_type("AWS::Lambda::EventSourceMapping")
                if ":dynamodb:" in deployed.resolve(template.props(lid)["EventSourceArn"])]
    assert streamed, "the template reads no table stream"
    for lid in streamed:
        props = template.props(lid)
        poller = pollers[lid]
        assert poller.stream_arn == deployed.resolve(props["EventSourceArn"])
        assert poller.function_name == deployed.resolve(props["FunctionName"]).split(":")[-1]
        assert poller.batch_size == int(props["BatchSize"])
        assert poller.starting_position == props["StartingPosition"]
        assert poller.report_batch_item_failures == ("ReportBatchItemFailures" in props["FunctionResponseTypes"])
        assert poller.on_failure_queue_arn == deployed.resolve(props["DestinationConfig"]["OnFailure"]["Destination"])
    # and moto's own synchronous stream trigger is off (it would empty the shard)
    from moto.dynamodb.models import dynamodb_backends

    tables = dynamodb_backends["123456789012"]["us-east-1"].tables.values()
    assert all(not t.lambda_event_source_mappings for t in tables)


def test_every_schedule_target_has_a_timer(real_stack):
    template, deployed = real_stack.deployed.template, real_stack.deployed
    timers = {(t.rule_logical_id, t.function_arn) for t in real_stack.events.schedules}
    for lid, rule in template.of_type("AWS::Events::Rule").items():
        if "ScheduleExpression" not in rule["Properties"]:
            continue
        for target in rule["Properties"]["Targets"]:
            assert (lid, deployed.resolve(target["Arn"])) in timers


def test_every_bucket_notification_is_applied(real_stack):
    s3 = real_stack.client("s3")
    wanted = bucket_notification_configs(real_stack.deployed)
    assert wanted, "the template has no bucket notifications"
    for bucket, config in wanted.items():
        actual = s3.get_bucket_notification_configuration(Bucket=bucket)
        for item in config.get("QueueConfigurations", []):
            assert any(
                a["QueueArn"] == item["QueueArn"]
                and a["Events"] == item["Events"]
                and a.get("Filter") == item.get("Filter")
                for a in actual.get("QueueConfigurations", [])
            ), (bucket, item)


def test_every_function_and_workflow_task_runs_in_process(real_stack):
    lam, sfn = real_stack.client("lambda"), real_stack.client("stepfunctions")
    functions = {f["FunctionArn"]: f for f in lam.list_functions()["Functions"]}
    # every function's handler imports from the repository (a missing module or name fails here)
    for fn in functions.values():
        assert callable(real_stack.runtime.handler_for(fn["FunctionName"], fn["Handler"])), fn["Handler"]
    machines = sfn.list_state_machines()["stateMachines"]
    assert machines
    for machine in machines:
        definition = json.loads(sfn.describe_state_machine(stateMachineArn=machine["stateMachineArn"])["definition"])
        tasks = lambda_targets_in_definition(definition)
        assert tasks, "the workflow calls no Lambda"
        for state, function in tasks:
            arn = function if function.count(":") == 6 else function.rsplit(":", 1)[0]
            assert arn in functions, f"state {state} calls {function}, which is not deployed"


def test_a_payment_flows_end_to_end(real_stack):
    """POST through the gateway -> SQS -> OrderStarter -> workflow (executor, wallet, ledger, finalize)."""
    if real_stack.sandbox is None:
        pytest.skip("psp_sandbox is not importable")
    body = {
        "buyer_info": {"buyer_id": "buyer_drift"},
        "checkout_id": "chk_drift_1",
        "credit_card_info": {"payment_method": "pm_card_visa"},
        "payment_orders": [
            {"seller_account": "seller_a", "amount": "12.34", "currency": "USD", "payment_order_id": "po_drift_1"}
        ],
    }
    request = urllib.request.Request(
        real_stack.api_url + "/v1/payments",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **real_stack.auth_headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status in (200, 201, 202)

    def status():
        read = urllib.request.Request(real_stack.api_url + "/v1/payments/po_drift_1", headers=real_stack.auth_headers)
        with urllib.request.urlopen(read, timeout=10) as resp:
            order = json.loads(resp.read())
        return order if order["payment_order_status"] in ("SUCCESS", "FAILED") else None

    order = real_stack.wait_until(status, timeout=20, interval=0.2)
    assert order["payment_order_status"] == "SUCCESS"
    assert order["wallet_updated"] and order["ledger_updated"]
