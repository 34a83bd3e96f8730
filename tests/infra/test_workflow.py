"""The state machine is the design's workflow: Express, the right states, results kept, retries and catches."""

from __future__ import annotations

from typing import Any

import pytest

from infra import names
from tests.infra.support import render, state_machine_definition

# One synthesis per xdist worker: keep every test that reads it on the same worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("infra-synth")

RETRIED = [
    "PspTransientError",
    "AwsTransientError",
    "Lambda.ServiceException",
    "Lambda.TooManyRequestsException",
    "Lambda.SdkClientException",
    "Lambda.Unknown",
    "Runtime.ExitError",  # the function's process died half-way: every step is safe to run again
    "Sandbox.Timedout",
    "States.Timeout",
]
THROTTLE_RETRIER = {"ErrorEquals": ["Lambda.TooManyRequestsException"], "IntervalSeconds": 1, "BackoffRate": 2,
                    "MaxAttempts": 8, "MaxDelaySeconds": 5, "JitterStrategy": "FULL"}
LAMBDA_TASKS = {  # state -> (function, result path)
    "Charge": (names.EXECUTOR, "$.charge"),
    "CreditWallet": (names.WALLET_FN, "$.wallet"),
    "RecordLedger": (names.LEDGER_FN, "$.ledger"),
    "MarkSucceeded": (names.FINALIZE, "$.finalize"),
    "MarkFailed": (names.FINALIZE, "$.finalize"),
    "MarkPending": (names.FINALIZE, "$.finalize"),
}


@pytest.fixture(scope="module")
def machine(synth) -> dict[str, Any]:
    (lid,) = synth.of_type("AWS::StepFunctions::StateMachine")
    return synth.props(lid)


@pytest.fixture(scope="module")
def asl(machine) -> dict[str, Any]:
    return state_machine_definition(machine)


def function_id(synth, spec: names.FunctionSpec) -> str:
    return synth.logical_id("AWS::Lambda::Function", f"{names.FUNCTIONS}{spec.name}")


def test_the_machine_is_express_and_logs_errors_to_its_log_group(synth, machine):
    assert machine["StateMachineType"] == "EXPRESS"
    logging = machine["LoggingConfiguration"]
    assert logging["Level"] == "ERROR"
    (destination,) = logging["Destinations"]
    log_group = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    assert synth.resources[log_group]["Type"] == "AWS::Logs::LogGroup"


def test_the_states_are_those_of_the_design(asl):
    assert asl["StartAt"] == "Charge"
    failure_notes = {f"{state}Failed" for state in LAMBDA_TASKS}
    assert set(asl["States"]) == {*LAMBDA_TASKS, *failure_notes, "ChargeOutcome", "ToDeadLetter", "Failed",
                                  "ChargeThrottled", "ChargeParked"}
    assert asl["TimeoutSeconds"] == 300


@pytest.mark.parametrize("state", sorted(LAMBDA_TASKS))
def test_each_lambda_task_calls_its_function_directly_and_keeps_the_state(synth, asl, state):
    spec, result_path = LAMBDA_TASKS[state]
    task = asl["States"][state]
    assert task["Type"] == "Task"
    # payload_response_only: the Resource is the function ARN itself, the input is the whole state.
    assert task["Resource"] == function_id(synth, spec)
    assert "Parameters" not in task and "InputPath" not in task and "OutputPath" not in task
    assert task["ResultPath"] == result_path


@pytest.mark.parametrize("state", sorted(LAMBDA_TASKS))
def test_each_lambda_task_retries_transient_errors_with_jittered_backoff(asl, state):
    *throttled, retry = asl["States"][state]["Retry"]
    interval, max_delay = (2, 8) if state == "Charge" else (1, 4)
    assert throttled == ([THROTTLE_RETRIER] if state == "Charge" else [])
    assert retry == {
        "ErrorEquals": [e for e in RETRIED if not throttled or e != "Lambda.TooManyRequestsException"],
        "IntervalSeconds": interval,
        "BackoffRate": 2,
        "MaxAttempts": 3,
        "MaxDelaySeconds": max_delay,
        "JitterStrategy": "FULL",
    }


def test_charge_sends_permanent_psp_errors_to_mark_failed_and_the_rest_to_the_dead_letter(asl):
    assert asl["States"]["Charge"]["Catch"] == [
        {"ErrorEquals": ["PspPermanentError"], "ResultPath": "$.error", "Next": "MarkFailed"},
        {"ErrorEquals": ["Lambda.TooManyRequestsException"], "ResultPath": "$.error", "Next": "ChargeThrottled"},
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "ChargeFailed"},
    ]
    assert asl["States"]["Charge"]["Next"] == "ChargeOutcome"


def test_a_charge_throttled_past_its_retries_is_left_to_the_sweeper_not_dead_lettered(asl):
    # The Executor's reserved concurrency refuses invokes in a burst; a refused invoke never ran. The charge
    # stays EXECUTING with its sweep deadline, so the sweeper re-drives it: nothing failed, no alarm.
    assert asl["States"]["ChargeThrottled"]["Type"] == "Succeed"


def test_a_charge_whose_psp_is_down_is_parked_for_the_sweeper_not_retried_nor_dead_lettered(asl):
    # outcome `parked`: the breaker refused the call and nothing was sent; the executor left the charge EXECUTING,
    # due when the breaker's wait ends. No error (no retry, no alarm): the quick retries would only be refused again.
    assert asl["States"]["ChargeParked"]["Type"] == "Succeed"
    parked = [choice for choice in asl["States"]["ChargeOutcome"]["Choices"] if choice["StringEquals"] == "parked"]
    assert parked == [{"Variable": "$.charge.outcome", "StringEquals": "parked", "Next": "ChargeParked"}]


@pytest.mark.parametrize("state", ["CreditWallet", "RecordLedger", "MarkSucceeded", "MarkFailed", "MarkPending"])
def test_other_tasks_dead_letter_whatever_the_retries_did_not_fix(asl, state):
    assert asl["States"][state]["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": f"{state}Failed"}
    ]
    # the note of which step failed, then the one dead-letter path
    assert asl["States"][f"{state}Failed"] == {
        "Type": "Pass", "Result": state, "ResultPath": "$.failed_step", "Next": "ToDeadLetter"}


def test_the_charge_outcome_chooses_the_path(asl):
    choice = asl["States"]["ChargeOutcome"]
    assert choice["Type"] == "Choice"
    routes = {(c["Variable"], c["StringEquals"]): c["Next"] for c in choice["Choices"]}
    assert routes == {
        ("$.charge.outcome", "succeeded"): "CreditWallet",
        ("$.charge.outcome", "failed"): "MarkFailed",
        ("$.charge.outcome", "pending"): "MarkPending",
        ("$.charge.outcome", "parked"): "ChargeParked",
    }
    assert "Default" not in choice  # an unknown outcome fails the execution: alarm, and the sweeper retries


def test_success_path_credits_the_wallet_then_the_ledger_then_finalizes(asl):
    states = asl["States"]
    assert states["CreditWallet"]["Next"] == "RecordLedger"
    assert states["RecordLedger"]["Next"] == "MarkSucceeded"
    for final in ("MarkSucceeded", "MarkFailed", "MarkPending"):
        assert states[final]["End"] is True


def test_dead_letter_sends_the_order_error_and_input_to_the_workflow_dlq_then_fails(synth, asl):
    dead_letter = asl["States"]["ToDeadLetter"]
    assert dead_letter["Resource"] == "arn:<AWS::Partition>:states:::sqs:sendMessage"
    dlq = synth.logical_id("AWS::SQS::Queue", f"{names.QUEUES}{names.WORKFLOW_DLQ}")
    assert dead_letter["Parameters"]["QueueUrl"] == dlq
    body = dead_letter["Parameters"]["MessageBody"]
    assert body["charge_key.$"] == "$.charge_key"
    assert body["payment_order_ids.$"] == "$.orders[*].payment_order_id"
    assert dead_letter["TimeoutSeconds"] == 5
    assert body["error.$"] == "$.error"
    assert body["step.$"] == "$.failed_step"
    assert body["attempts.$"] == "$.attempt"
    assert body["input.$"] == "$$.Execution.Input"
    assert dead_letter["ResultPath"] is None
    assert dead_letter["Next"] == "Failed"
    assert asl["States"]["Failed"]["Type"] == "Fail"


def test_the_machine_may_invoke_exactly_the_four_task_functions_and_send_to_the_workflow_dlq(synth, machine):
    role = machine["RoleArn"]["Fn::GetAtt"][0]
    (policy,) = [p for p in synth.of_type("AWS::IAM::Policy").values() if p["Properties"]["Roles"] == [{"Ref": role}]]
    invoked = set()
    sent = set()
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement["Action"] == "lambda:InvokeFunction":
            invoked |= {render(r).removesuffix(":*") for r in resources}
        if statement["Action"] == "sqs:SendMessage":
            sent |= {render(r) for r in resources}
    assert invoked == {
        function_id(synth, s) for s in (names.EXECUTOR, names.WALLET_FN, names.LEDGER_FN, names.FINALIZE)
    }
    assert sent == {synth.logical_id("AWS::SQS::Queue", f"{names.QUEUES}{names.WORKFLOW_DLQ}")}
