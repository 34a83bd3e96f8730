"""Issue 20 §8: each function is what AWS will run.

On the synthesized template (cdk.out) and the local stack: every handler cold-starts in a fresh process with
exactly its template environment; a checkout, a settlement file and a sweep run through the stack, and every
AWS call each function made is granted by that function's role in the template.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from types import SimpleNamespace

import pytest

from functions.shared.money import Money
from local.moto_server import free_port
from local.permissions import Call, Roles, Statement, allowed, calls_as_iam
from local.stack import REPO_ROOT, LocalStack, Ports
from psp_sandbox.settlement import BALANCE_REPORT
from tests.support.waiting import wait_for
from verification.storefront import ApiClient, make_checkouts

TEMPLATE = REPO_ROOT / "cdk.out" / "MarketPay.template.json"
pytestmark = pytest.mark.xdist_group("e2e")


def _functions() -> dict[str, dict]:
    if not TEMPLATE.exists():
        return {}
    resources = json.loads(TEMPLATE.read_text())["Resources"]
    return {lid: r["Properties"] for lid, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}


FUNCTIONS = _functions()
# Run in the child: replaces os.environ with a mapping that notes every variable asked for and missing, imports
# the handler's module, checks the handler, and prints what was missing and how long the import took.
COLD_START = """
import importlib, json, os, sys, time
from collections.abc import MutableMapping

class Watched(MutableMapping):
    def __init__(self, data): self.data, self.missing = data, set()
    def __getitem__(self, key):
        if key not in self.data: self.missing.add(key)
        return self.data[key]
    def __setitem__(self, key, value): self.data[key] = value
    def __delitem__(self, key): del self.data[key]
    def __iter__(self): return iter(self.data)
    def __len__(self): return len(self.data)
    def copy(self): return dict(self.data)

os.environ = Watched(os.environ)
started = time.perf_counter()
module_name, _, attribute = os.environ["_HANDLER"].rpartition(".")
handler = getattr(importlib.import_module(module_name), attribute)
print(json.dumps({"callable": callable(handler), "import_ms": round((time.perf_counter() - started) * 1000),
                  "missing": sorted(os.environ.missing)}))
"""


@pytest.fixture(scope="module")
def stack():
    if not TEMPLATE.exists():
        pytest.fail("cdk.out is missing: run `make synth` (make test does it first)")
    running = LocalStack(ports=Ports(aws=free_port(), api=free_port(), psp=free_port()),
                         extra_env={"POWERTOOLS_LOG_LEVEL": "WARNING"}).start()
    yield running
    running.stop()


def _deployed_function(stack: LocalStack, logical_id: str) -> SimpleNamespace:
    name = stack.deployed.physical_ids[logical_id]
    config = stack.client("lambda").get_function_configuration(FunctionName=name)
    return SimpleNamespace(function_name=name, memory_size=config["MemorySize"], handler=config["Handler"],
                           variables=config.get("Environment", {}).get("Variables", {}))


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_every_handler_cold_starts_with_exactly_its_template_environment(stack, logical_id):
    # Given the function's environment as the local runtime gives it: its template variables, resolved (and
    # lowered in log level by the caller's extra_env), and what Lambda sets, nothing else
    fn = _deployed_function(stack, logical_id)
    env = stack.runtime.environment_of(fn)
    changed = set(stack.runtime.replacements) | set(stack.runtime.env_overrides)
    assert {k: env[k] for k in fn.variables} == {**fn.variables, **{k: env[k] for k in fn.variables if k in changed}}
    assert set(env) - set(fn.variables) <= _lambda_set(env)
    project_vars = {k for props in FUNCTIONS.values() for k in props.get("Environment", {}).get("Variables", {})}

    # When the handler's module is imported in a fresh process with exactly that environment
    child = subprocess.run([sys.executable, "-c", COLD_START], env={**env, "PYTHONPATH": str(REPO_ROOT)},
                           cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120)

    # Then it imports, the handler exists, and the import asked for no variable another function has but it lacks
    assert child.returncode == 0, child.stderr[-3000:]
    answer = json.loads(child.stdout.strip().splitlines()[-1])
    assert answer["callable"], FUNCTIONS[logical_id]["Handler"]
    assert sorted(set(answer["missing"]) & project_vars) == []
    print(f"{logical_id}: import {answer['import_ms']} ms")


def test_a_function_reading_a_variable_its_template_lacks_fails_as_on_aws(stack):
    # Given recon's deployed function, and the same code deployed without ORDERS_QUEUE_URL (as recon was)
    recon = _deployed_function(stack, next(lid for lid in FUNCTIONS if "Recon" in lid))
    lacking = SimpleNamespace(**{**vars(recon), "function_name": "ReconWithoutOrdersQueue"})
    stack.runtime.define(lacking.function_name, {k: v for k, v in recon.variables.items() if k != "ORDERS_QUEUE_URL"})
    event = json.dumps(_settlement_notification(stack.outputs["SettlementBucketName"], "incoming/stripe/gone.csv"))

    # When each is handed a notification of a file that is gone
    try:
        answers = {fn.function_name: json.loads(stack.runtime.dispatch(_with_arn(fn), event)[0])
                   for fn in (recon, lacking)}
    finally:
        stack.runtime.calls.pop(lacking.function_name, None)  # not a function of the template

    # Then the deployed one finds nothing to do, and the other fails the record: settings are its own
    assert answers[recon.function_name] == {"batchItemFailures": []}
    failed = answers[lacking.function_name]  # Powertools raises when every record of a batch failed
    assert failed["errorType"] == "BatchProcessingError"
    assert "MissingSetting: the recon function needs ORDERS_QUEUE_URL" in failed["errorMessage"]


def _with_arn(fn: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(**vars(fn), timeout=60,
                           function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{fn.function_name}")


def _settlement_notification(bucket: str, key: str) -> dict:
    s3_event = {"Records": [{"eventName": "ObjectCreated:Put",
                             "s3": {"bucket": {"name": bucket}, "object": {"key": key, "sequencer": "01"}}}]}
    return {"Records": [{"messageId": "m1", "receiptHandle": "r1", "body": json.dumps(s3_event),
                         "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
                         "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:recon",
                         "awsRegion": "us-east-1"}]}


def _lambda_set(env: dict[str, str]) -> set[str]:
    return {k for k in env if k.startswith(("AWS_", "LAMBDA_", "_HANDLER", "POWERTOOLS_LOG_LEVEL"))} | {
        "TZ", "PATH", "LANG"}


def test_every_aws_call_of_a_flow_is_granted_by_the_functions_role(stack):
    # Given a checkout placed through the API and run to its end
    api = ApiClient(stack.api_url, stack.api_key)
    (checkout,) = make_checkouts(1, seed=12, decline_rate=0.0,  # seed 12: one JPY order, no cents
                                 prefix=f"iam{uuid.uuid4().hex[:6]}").checkouts
    status, answer, _ = api.post_checkout(checkout)
    assert status == 202, answer
    for order in checkout["payment_orders"]:
        wait_for(lambda o=order: api.get_order(o["payment_order_id"])[1].get("payment_order_status")
              in ("SUCCESS", "FAILED"), 30, f"{order['payment_order_id']} final")

    # And the first order's seller registered with a connected account, its delivery confirmed, its transfer made,
    # and the seller's balance and statement read
    seller, first = checkout["payment_orders"][0]["seller_account"], checkout["payment_orders"][0]["payment_order_id"]
    assert api.get_order(first)[1]["payment_order_status"] == "SUCCESS"  # no declines in this workload
    account = _connected_account(stack.psp_url)
    assert api.request("PUT", f"/v1/sellers/{seller}", {"psp_account_id": account, "commission_bps": 500})[0] == 200
    assert api.request("POST", f"/v1/payments/{first}/release")[0] == 202
    wait_for(lambda: api.get_order(first)[1].get("payout_status") == "TRANSFERRED", 30, "transfer")
    assert api.request("GET", f"/v1/sellers/{seller}/balance")[0] == 200
    assert api.request("GET", f"/v1/sellers/{seller}/statement")[0] == 200
    # a refund after the transfer: the Refund worker refunds and reverses the seller's share
    ordered = Money.from_major(checkout["payment_orders"][0]["amount"], checkout["payment_orders"][0]["currency"])
    half = Money(max(1, ordered.minor // 2), ordered.currency).to_major()  # in the order's currency: JPY has no cents
    refund = {"refund_id": f"rf_{first}", "amount": half}
    assert api.request("POST", f"/v1/payments/{first}/refunds", refund)[0] == 202
    wait_for(lambda: api.request("GET", f"/v1/refunds/rf_{first}")[1].get("status") == "SUCCEEDED", 30, "refund")

    # And the PSP's settlement file dropped where the PSP drops it, reconciled into a report
    with urllib.request.urlopen(f"{stack.psp_url}/_sandbox/settlement?report={BALANCE_REPORT}", timeout=60) as got:
        body = got.read()
    s3, bucket, name = stack.client("s3"), stack.outputs["SettlementBucketName"], f"iam-{uuid.uuid4().hex[:8]}.csv"
    s3.put_object(Bucket=bucket, Key=f"incoming/stripe/{name}", Body=body, ContentType="text/csv")
    recon_failed = lambda: [i for i in stack.runtime.invocations if "Recon" in i.function_name and i.outcome != "ok"]  # noqa: E731
    wait_for(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"reports/stripe/{name}").get("KeyCount")
          or recon_failed(), 60, "recon report")

    # And the schedules: the sweeper's, and the nightly internal recon's (fired: a cron rule does not tick locally)
    for schedule in stack.events.schedules:
        stack.events.fire(schedule.rule_logical_id)

    # Then every function ran without error and made AWS calls, each granted by its role in the template
    names = {stack.deployed.physical_ids[lid] for lid in FUNCTIONS}
    ran = [i for i in stack.runtime.invocations if i.function_name in names]
    assert {i.function_name for i in ran} == names
    assert [(i.function_name, i.outcome) for i in ran if i.outcome != "ok"] == []
    assert {n for n, calls in stack.runtime.calls.items() if calls} == names
    assert stack.ungranted_calls() == {}
    for function, calls in sorted(stack.runtime.calls.items()):
        print(function.split("-")[1], sorted({c.action for c in calls}))


def _connected_account(psp_url: str) -> str:
    """A connected account at the sandbox, created as the platform onboards one (Stripe's form encoding)."""
    form = b"type=express&capabilities[transfers][requested]=true"
    request = urllib.request.Request(f"{psp_url}/v1/accounts", data=form, headers={
        "Authorization": "Bearer sk_test_local", "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(json.loads(answer.read())["id"])


def test_a_call_the_role_does_not_grant_is_reported(stack):
    # Given Recon's role as the template has it, and a send to the review queue (which it grants)
    recon = next(stack.deployed.physical_ids[lid] for lid in FUNCTIONS if "Recon" in lid)
    review = Call("sqs:SendMessage", f"arn:aws:sqs:us-east-1:123456789012:{_queue_name(stack, 'ReviewQueueUrl')}")
    roles = Roles.of(stack.deployed)
    assert roles.ungranted({recon: {review}}) == {}
    # When it also sends to a queue it was given no grant for, or its role loses the statement naming SendMessage
    dlq = Call("sqs:SendMessage", f"arn:aws:sqs:us-east-1:123456789012:{_queue_name(stack, 'WorkflowDlqUrl')}")
    assert roles.ungranted({recon: {review, dlq}}) == {recon: [dlq]}
    roles.statements[recon] = [s for s in roles.statements[recon] if not any(p.match(review.action) for p in s.actions)]
    # Then the check names exactly those calls
    assert roles.ungranted({recon: {review}}) == {recon: [review]}


def _queue_name(stack: LocalStack, output: str) -> str:
    return stack.outputs[output].rstrip("/").rsplit("/", 1)[-1]


TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/"


@pytest.mark.parametrize(("signing_name", "operation", "params", "expected"), [
    ("dynamodb", "TransactWriteItems",
     {"TransactItems": [{"Put": {"TableName": "A"}}, {"Update": {"TableName": "B"}},
                        {"ConditionCheck": {"TableName": "A"}}]},
     [Call("dynamodb:PutItem", TABLE + "A"), Call("dynamodb:UpdateItem", TABLE + "B"),
      Call("dynamodb:ConditionCheckItem", TABLE + "A")]),
    ("dynamodb", "Query", {"TableName": "A", "IndexName": "sweep"}, [Call("dynamodb:Query", TABLE + "A/index/sweep")]),
    ("dynamodb", "BatchGetItem", {"RequestItems": {"A": {}}}, [Call("dynamodb:BatchGetItem", TABLE + "A")]),
    ("sqs", "SendMessageBatch", {"QueueUrl": "http://127.0.0.1:5000/123456789012/Orders"},
     [Call("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:Orders")]),
    ("s3", "UploadPart", {"Bucket": "b", "Key": "reports/x.csv"},
     [Call("s3:PutObject", "arn:aws:s3:::b/reports/x.csv")]),
    ("s3", "CopyObject", {"Bucket": "b", "Key": "quarantine/x", "CopySource": {"Bucket": "b", "Key": "incoming/x"}},
     [Call("s3:GetObject", "arn:aws:s3:::b/incoming/x"), Call("s3:PutObject", "arn:aws:s3:::b/quarantine/x")]),
    ("ssm", "GetParameter", {"Name": "/marketpay/key", "WithDecryption": True},
     [Call("ssm:GetParameter", "arn:aws:ssm:us-east-1:123456789012:parameter/marketpay/key")]),
    ("states", "StartExecution", {"stateMachineArn": "arn:sm"}, [Call("states:StartExecution", "arn:sm")]),
    ("monitoring", "PutMetricData", {}, [Call("cloudwatch:PutMetricData")]),
])
def test_calls_are_recorded_as_the_authorizations_aws_checks(signing_name, operation, params, expected):
    assert calls_as_iam(signing_name, operation, params) == expected


@pytest.mark.parametrize(("statement", "call", "granted"), [
    ({"Action": "dynamodb:*", "Resource": TABLE + "A"}, Call("dynamodb:PutItem", TABLE + "A"), True),
    ({"Action": "dynamodb:*", "Resource": TABLE + "A"}, Call("dynamodb:Query", TABLE + "A/index/i"), False),
    ({"Action": ["s3:GetObject*"], "Resource": "arn:aws:s3:::b/incoming/*"},
     Call("s3:GetObject", "arn:aws:s3:::b/incoming/x.csv"), True),
    ({"Action": ["s3:GetObject*"], "Resource": "arn:aws:s3:::b/incoming/*"},
     Call("s3:GetObject", "arn:aws:s3:::b/reports/x.csv"), False),
    ({"Action": "SQS:sendmessage", "Resource": "*"}, Call("sqs:SendMessage", "arn:aws:sqs:r:a:q"), True),
    ({"Effect": "Deny", "Action": "sqs:*", "Resource": "*"}, Call("sqs:SendMessage", "arn:aws:sqs:r:a:q"), False),
])
def test_statements_match_as_iam_does(statement, call, granted):
    assert allowed([Statement.parse({"Effect": "Allow", **statement})], call) is granted
