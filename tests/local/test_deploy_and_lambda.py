"""Template deploy into moto, and Lambda invocations running in-process code."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from moto.awslambda.models import LambdaFunction

from local.lambda_runtime import LambdaKilled, LambdaRuntime, SavedEnvironment


def test_describe_stacks_shows_the_stack_and_its_outputs(toy_stack):
    # Given the toy template deployed, When CloudFormation is asked, Then the stack and its outputs are there
    stack = toy_stack.client("cloudformation").describe_stacks(StackName="ToyStack")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    # the HTTP API is served by the local gateway, so its outputs point there
    assert outputs["ApiUrl"] == toy_stack.api_url + "/"
    assert outputs["ApiEndpoint"] == toy_stack.api_url
    assert outputs["StateMachineArn"].startswith("arn:aws:states:us-east-1:123456789012:stateMachine:")
    table = toy_stack.client("dynamodb").describe_table(TableName=outputs["TableName"])["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_aws_cli_sees_the_stack(toy_stack):
    aws = Path(sys.executable).parent / "aws"
    if not aws.exists() and not shutil.which("aws"):
        pytest.skip("no AWS CLI installed")
    out = subprocess.run(
        [
            str(aws) if aws.exists() else "aws",
            "--endpoint-url",
            toy_stack.aws_url,
            "cloudformation",
            "describe-stacks",
            "--stack-name",
            "ToyStack",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    outputs = {o["OutputKey"]: o["OutputValue"] for o in json.loads(out)["Stacks"][0]["Outputs"]}
    assert outputs["ApiUrl"] == toy_stack.api_url + "/"


def test_resources_moto_cannot_model_are_created_beside_the_stack(toy_stack):
    alarms = toy_stack.client("cloudwatch").describe_alarms()["MetricAlarms"]
    (alarm,) = [a for a in alarms if a["AlarmName"] == toy_stack.outputs["AlarmName"]]
    dlq_name = toy_stack.outputs["WorkDlqUrl"].rsplit("/", 1)[1]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": dlq_name}]
    assert alarm["AlarmActions"][0].startswith("arn:aws:sns:us-east-1:123456789012:")
    # the state machine is in the executing backend, with the template's type
    sfn = toy_stack.client("stepfunctions")
    assert sfn.describe_state_machine(stateMachineArn=toy_stack.outputs["StateMachineArn"])["type"] == "EXPRESS"
    assert toy_stack.deployed.skipped["HttpApi"] == "AWS::ApiGatewayV2::Api"


def test_assets_are_in_the_bootstrap_bucket(toy_stack):
    s3 = toy_stack.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="cdk-hnb659fds-assets-123456789012-us-east-1")["Contents"]]
    assert sorted(keys) == ["a" * 64 + ".zip", "b" * 64 + ".zip"]
    fn = toy_stack.client("lambda").get_function(FunctionName=toy_stack.outputs["EchoFunctionName"])
    assert fn["Configuration"]["Handler"] == "toy_handlers.echo"
    assert fn["Configuration"]["Layers"]


def test_invoke_through_moto_runs_the_handler_in_process(toy_stack, calls):
    # moto's Docker path is replaced: the answer comes from toy_handlers.echo, run in this process
    assert LambdaFunction._invoke_lambda.__qualname__.startswith("LambdaRuntime.install")
    name = toy_stack.outputs["EchoFunctionName"]
    answer = toy_stack.client("lambda").invoke(FunctionName=name, Payload=b'{"n": 7}')
    result = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer
    assert calls == [("echo", {"n": 7})]
    assert result["function_name"] == name
    assert result["memory"] == 256
    assert 0 < result["remaining_ms"] <= 10_000  # the template's Timeout
    assert result["table"] == toy_stack.outputs["TableName"]  # environment from the template, resolved
    record = toy_stack.runtime.invocations[-1]
    assert (record.function_name, record.trigger, record.outcome) == (name, "invoke", "ok")


def _invoke(stack, function_output, payload=b"{}"):
    answer = stack.client("lambda").invoke(FunctionName=stack.outputs[function_output], Payload=payload)
    assert "FunctionError" not in answer
    return json.loads(answer["Payload"].read())


def test_each_function_sees_only_its_own_variables_and_singletons(toy_stack):
    # Given two functions whose templates give different variables (TableFn alone has ONLY_TABLE_FN)
    # When each runs, Then each sees its own, in its own threads and pool tasks too, and its own settings()
    table_fn = _invoke(toy_stack, "TableFunctionName")
    echo = _invoke(toy_stack, "EchoFunctionName")
    assert table_fn["seen_in_threads"] == ["mine", "mine"]
    assert table_fn["settings"] == {"only_table_fn": "mine", "service": None}
    assert (echo["only_table_fn"], echo["psp"], echo["service"]) == (None, None, "echo")
    assert echo["settings"] == {"only_table_fn": None, "service": "echo"}
    # and code beside the functions (ops tools) finds the names they share, but no function's own identity
    assert os.environ["TOY_TABLE"] == toy_stack.outputs["TableName"]
    assert os.environ.get("POWERTOOLS_SERVICE_NAME") != "echo"


def test_what_lambda_sets_is_there_and_nothing_else(toy_stack):
    name = toy_stack.outputs["EchoFunctionName"]
    (fn,) = [f for f in toy_stack.client("lambda").list_functions()["Functions"] if f["FunctionName"] == name]
    env = toy_stack.runtime.environment_of(SimpleNamespace(function_name=name, memory_size=256,
                                                           handler="toy_handlers.echo"))
    template_vars = set(fn["Environment"]["Variables"])
    lambda_vars = {k for k in env if k.startswith(("AWS_", "_HANDLER", "LAMBDA_"))} | {"TZ", "PATH", "LANG"}
    assert set(env) == template_vars | lambda_vars
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name and env["AWS_ENDPOINT_URL"] == toy_stack.aws_url


def test_calls_are_recorded_as_iam_actions_and_checked_against_the_role(toy_stack):
    # Given TableFn's role grants dynamodb:Get* on the table only
    from local.permissions import Call, Roles

    _invoke(toy_stack, "TableFunctionName")
    name = toy_stack.outputs["TableFunctionName"]
    table_arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{toy_stack.outputs['TableName']}"
    # Then its calls are recorded as AWS authorizes them, and the write is the one its role does not grant
    assert toy_stack.runtime.calls[name] == {Call("dynamodb:GetItem", table_arn), Call("dynamodb:PutItem", table_arn)}
    ungranted = Roles.of(toy_stack.deployed).ungranted({name: toy_stack.runtime.calls[name]})
    assert ungranted == {name: [Call("dynamodb:PutItem", table_arn)]}


def test_an_unhandled_exception_returns_the_aws_error_shape(toy_stack):
    lam = toy_stack.client("lambda")
    fail_fn = [f["FunctionName"] for f in lam.list_functions()["Functions"] if "FailFn" in f["FunctionName"]][0]
    answer = lam.invoke(FunctionName=fail_fn, Payload=b"{}")
    error = json.loads(answer["Payload"].read())
    assert answer["FunctionError"]
    assert error["errorType"] == "RuntimeError"
    assert error["errorMessage"] == "this handler always fails"
    assert error["stackTrace"]


def test_a_kill_hook_ends_the_invocation_as_a_runtime_crash(toy_stack, calls):
    name = toy_stack.outputs["EchoFunctionName"]
    lam = toy_stack.client("lambda")

    def kill_after(invocation):
        raise LambdaKilled("killed after the handler")

    toy_stack.runtime.after_invoke.append(kill_after)
    try:
        answer = lam.invoke(FunctionName=name, Payload=b'{"k": 1}')
    finally:
        toy_stack.runtime.after_invoke.remove(kill_after)
    error = json.loads(answer["Payload"].read())
    assert error["errorType"] == "Runtime.ExitError"
    assert calls == [("echo", {"k": 1})]  # the handler ran; its answer was lost

    def kill_before(invocation):
        raise LambdaKilled("killed before the handler")

    toy_stack.runtime.before_invoke.append(kill_before)
    try:
        answer = lam.invoke(FunctionName=name, Payload=b'{"k": 2}')
    finally:
        toy_stack.runtime.before_invoke.remove(kill_before)
    assert json.loads(answer["Payload"].read())["errorType"] == "Runtime.ExitError"
    assert calls == [("echo", {"k": 1})]  # never ran the second time


def test_saved_environment_puts_back_what_was_there(monkeypatch):
    monkeypatch.setenv("KEPT", "before")
    monkeypatch.delenv("ADDED", raising=False)
    env = SavedEnvironment()
    env.set({"KEPT": "during", "ADDED": "x"})
    env.set({"KEPT": "later"})  # the first value seen is the one restored
    assert os.environ["KEPT"] == "later" and os.environ["ADDED"] == "x"
    env.restore()
    assert os.environ["KEPT"] == "before" and "ADDED" not in os.environ


def test_invocations_at_once_never_share_module_state(tmp_path, monkeypatch):
    # A handler module keeps the current event in a global, as a Powertools resolver does. On AWS two
    # invocations at once run in two execution environments; locally each gets its own copy of the module.
    (tmp_path / "remembers_event.py").write_text(
        "import time\nCURRENT = {}\n\n\ndef handler(event, context):\n"
        "    CURRENT['event'] = event\n    time.sleep(event['sleep'])\n    return CURRENT['event']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    runtime = LambdaRuntime(code_root=tmp_path, function_concurrency=2)
    answers = {}

    def invoke(name, sleep):
        payload, errored, _ = runtime.dispatch(_fake_function("remembers_event.handler"),
                                               json.dumps({"name": name, "sleep": sleep}))
        answers[name] = json.loads(payload)["name"]

    threads = [threading.Thread(target=invoke, args=("slow", 0.3)), threading.Thread(target=invoke, args=("fast", 0))]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for thread in threads:
        thread.join()
    assert answers == {"slow": "slow", "fast": "fast"}


def test_a_handler_holding_a_powertools_resolver_runs_one_invocation_at_a_time(tmp_path, monkeypatch):
    # Powertools keeps the current event on its BaseRouter class: a module copy would not isolate it.
    (tmp_path / "overlap_log.py").write_text("RUNNING = []\nMOST = [0]\n")
    (tmp_path / "resolver_handler.py").write_text(
        "import time\nfrom aws_lambda_powertools.event_handler import APIGatewayHttpResolver\n"
        "import overlap_log\napp = APIGatewayHttpResolver()\n\n\ndef handler(event, context):\n"
        "    overlap_log.RUNNING.append(1)\n"
        "    overlap_log.MOST[0] = max(overlap_log.MOST[0], len(overlap_log.RUNNING))\n"
        "    time.sleep(0.2)\n    overlap_log.RUNNING.pop()\n    return {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    runtime = LambdaRuntime(code_root=tmp_path, function_concurrency=4)
    threads = [threading.Thread(target=runtime.dispatch, args=(_fake_function("resolver_handler.handler"), "{}"))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    import overlap_log

    assert overlap_log.MOST == [1]


def _fake_function(handler, timeout=3):
    return SimpleNamespace(
        function_name="fake",
        memory_size=128,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:fake",
        timeout=timeout,
        handler=handler,
    )


@pytest.mark.parametrize(
    ("handler", "event", "timeout", "error_type"),
    [
        ("no_such_module.handler", {}, 3, "Runtime.ImportModuleError"),
        ("toy_handlers.no_such_function", {}, 3, "Runtime.HandlerNotFound"),
        ("toy_handlers.unmarshallable", {}, 3, "Runtime.MarshalError"),
        ("toy_handlers.slow", {"sleep": 0.3}, 0.1, "Sandbox.Timedout"),
    ],
)
def test_runtime_failures_carry_the_aws_error_names(tmp_path, handler, event, timeout, error_type):
    runtime = LambdaRuntime(code_root=tmp_path)
    payload, errored, _ = runtime.dispatch(_fake_function(handler, timeout), json.dumps(event))
    assert errored
    assert json.loads(payload)["errorType"] == error_type
    assert runtime.invocations[-1].outcome == error_type


def test_runtime_answers_the_handler_result(tmp_path):
    runtime = LambdaRuntime(code_root=tmp_path)
    payload, errored, _ = runtime.dispatch(_fake_function("toy_handlers.slow"), '{"sleep": 0}')
    assert (json.loads(payload), errored) == ({"slept": 0}, False)


def test_the_timeout_counts_from_the_handlers_start_not_from_the_wait_for_an_environment(tmp_path, monkeypatch):
    # One environment: the second invocation waits for the first. On AWS its timeout starts with its handler.
    (tmp_path / "waits.py").write_text(
        "import time\n\n\ndef handler(event, context):\n"
        "    left = context.get_remaining_time_in_millis()\n    time.sleep(event['sleep'])\n    return left\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    runtime = LambdaRuntime(code_root=tmp_path, function_concurrency=1)
    answers = {}

    def invoke(name, sleep):
        payload, errored, _ = runtime.dispatch(_fake_function("waits.handler", timeout=2), json.dumps({"sleep": sleep}))
        answers[name] = (json.loads(payload), errored)

    threads = [threading.Thread(target=invoke, args=("first", 1.5)), threading.Thread(target=invoke, args=("then", 0))]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for thread in threads:
        thread.join()
    left, errored = answers["then"]
    assert not errored and left > 1500, left  # not 2 s less the 1.4 s it waited
