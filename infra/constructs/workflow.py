"""The charge workflow of docs/design.md "Workflow": Step Functions Express, one execution per charge (a
checkout in one currency; its orders share the outcome), named <charge_key>-<attempt> (sanitized).

Charge -> ChargeOutcome: succeeded -> CreditWallet -> RecordLedger -> MarkSucceeded; failed -> MarkFailed;
pending -> MarkPending; parked (the charge's PSP down, nothing sent) -> ChargeParked, left EXECUTING for the
sweeper. Every task keeps the state and adds its result (`$.charge`, `$.wallet`, `$.ledger`), so each step sees
what came before. PspPermanentError from Charge -> MarkFailed; anything else left after the retries ->
ToDeadLetter (WorkflowDlq) -> Failed. Retry and Catch match functions/shared/errors.py by class name.
A throttled invoke leaves the charge EXECUTING for the sweeper too.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra import names
from infra.nag import acknowledge, arn_placeholder

RETRIED_ERRORS = [
    names.PSP_TRANSIENT_ERROR,
    names.AWS_TRANSIENT_ERROR,  # DynamoDB conflicts, throttling, 5xx, timeouts (functions/shared/tables.py)
    "Lambda.ServiceException",
    names.LAMBDA_THROTTLED,
    "Lambda.SdkClientException",
    "Lambda.Unknown",
    "Runtime.ExitError",  # the function's process died half-way: every step is safe to run again
    "Sandbox.Timedout",
    "States.Timeout",
]



@dataclass(frozen=True)
class RetryPolicy:
    """One task's Retry. With its function's timeout it bounds the task's worst case (test_workflow_budget)."""

    max_attempts: int
    interval_s: int
    max_delay_s: int
    backoff_rate: float = 2


# Every path's worst case (each try at its full timeout, each backoff at its cap) stays under 270 s of
# Express's 300 s: Charge 4 x 20 + 14 (+ 32 throttled), three steps of 4 x 8 + 7, the dead letter 3 x 5 + 3 = 261 s.
CHARGE_RETRY = RetryPolicy(max_attempts=3, interval_s=2, max_delay_s=8)
# The Executor's reserved concurrency (infra/governor.py) refuses invokes past it in a burst. A refused invoke
# never ran, so its tries cost only their waits: 1+2+4+5x5 = 32 s, jittered. Past them the charge is left
# EXECUTING for the sweeper (ChargeThrottled), which re-drives it at its deadline: no dead letter, nothing failed.
THROTTLE_RETRY = RetryPolicy(max_attempts=8, interval_s=1, max_delay_s=5)
STEP_RETRY = RetryPolicy(max_attempts=3, interval_s=1, max_delay_s=4)
DEAD_LETTER_RETRY = RetryPolicy(max_attempts=2, interval_s=1, max_delay_s=2)
DEAD_LETTER_TIMEOUT_S = 5
ERROR_PATH = "$.error"  # a caught error lands here as {Error, Cause}, next to the order
FAILED_STEP_PATH = "$.failed_step"  # which state failed, for the dead letter


class Workflow(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        executor: lambda_.IFunction,
        wallet: lambda_.IFunction,
        ledger: lambda_.IFunction,
        finalize: lambda_.IFunction,
        workflow_dlq: sqs.IQueue,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)

        def task(state: str, fn: lambda_.IFunction, result_path: str, policy: RetryPolicy = STEP_RETRY,
                 throttled: RetryPolicy | None = None) -> tasks.LambdaInvoke:
            step = tasks.LambdaInvoke(
                self,
                state,
                lambda_function=fn,
                payload_response_only=True,  # Resource = the function ARN, result = the handler's return
                retry_on_service_exceptions=False,  # the design's own Retry below replaces CDK's default
                result_path=result_path,
            )
            if throttled is not None:  # first: Step Functions uses the first retrier that names the error
                step.add_retry(
                    errors=[names.LAMBDA_THROTTLED], interval=Duration.seconds(throttled.interval_s),
                    backoff_rate=throttled.backoff_rate, max_attempts=throttled.max_attempts,
                    max_delay=Duration.seconds(throttled.max_delay_s), jitter_strategy=sfn.JitterType.FULL,
                )
            step.add_retry(
                errors=[e for e in RETRIED_ERRORS if throttled is None or e != names.LAMBDA_THROTTLED],
                interval=Duration.seconds(policy.interval_s),
                backoff_rate=policy.backoff_rate,
                max_attempts=policy.max_attempts,
                max_delay=Duration.seconds(policy.max_delay_s),
                jitter_strategy=sfn.JitterType.FULL,
            )
            return step

        dead_letter = tasks.SqsSendMessage(
            self,
            names.TO_DEAD_LETTER,
            queue=workflow_dlq,
            # Same shape as the sweeper's dead letters (functions/shared/queues.py), plus the execution.
            message_body=sfn.TaskInput.from_object(
                {
                    "charge_key": sfn.JsonPath.string_at("$.charge_key"),
                    "checkout_id": sfn.JsonPath.string_at("$.checkout_id"),
                    "payment_order_ids": sfn.JsonPath.list_at("$.orders[*].payment_order_id"),
                    "step": sfn.JsonPath.string_at(FAILED_STEP_PATH),
                    "error": sfn.JsonPath.object_at(ERROR_PATH),
                    "attempts": sfn.JsonPath.number_at("$.attempt"),
                    "execution": sfn.JsonPath.string_at("$$.Execution.Name"),
                    "input": sfn.JsonPath.object_at("$$.Execution.Input"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
            task_timeout=sfn.Timeout.duration(Duration.seconds(DEAD_LETTER_TIMEOUT_S)),
        )
        dead_letter.add_retry(
            errors=["States.ALL"], interval=Duration.seconds(DEAD_LETTER_RETRY.interval_s),
            backoff_rate=DEAD_LETTER_RETRY.backoff_rate, max_attempts=DEAD_LETTER_RETRY.max_attempts,
            max_delay=Duration.seconds(DEAD_LETTER_RETRY.max_delay_s), jitter_strategy=sfn.JitterType.FULL,
        )
        dead_letter.next(sfn.Fail(self, names.FAILED, error="DeadLettered", cause="sent to WorkflowDlq"))

        def to_dead_letter(state: str) -> sfn.IChainable:
            """Each task's catch notes the failed state's name, then shares the one dead-letter path."""
            note = sfn.Pass(self, f"{state}Failed", result=sfn.Result.from_string(state),
                            result_path=FAILED_STEP_PATH)
            return note.next(dead_letter)

        def mark(state: str) -> tasks.LambdaInvoke:
            step = task(state, finalize, "$.finalize")
            step.add_catch(to_dead_letter(state), errors=["States.ALL"], result_path=ERROR_PATH)
            return step

        # Finalize gets the whole state and reads the outcome from it: `$.charge.outcome` (succeeded, failed,
        # pending) or, after a PspPermanentError, `$.error`. A literal {"outcome": ...} merged into the state
        # is not expressible here: with payload_response_only the payload is ASL `Parameters`, which must be an
        # object, so it could not carry the whole state, and naming fields would fail on the absent `$.charge`.
        mark_succeeded = mark(names.MARK_SUCCEEDED)
        mark_failed = mark(names.MARK_FAILED)
        mark_pending = mark(names.MARK_PENDING)

        charge = task(names.CHARGE, executor, "$.charge", CHARGE_RETRY, throttled=THROTTLE_RETRY)
        charge.add_catch(mark_failed, errors=[names.PSP_PERMANENT_ERROR], result_path=ERROR_PATH)
        charge.add_catch(sfn.Succeed(self, names.CHARGE_THROTTLED, comment="left EXECUTING: the sweeper re-drives it"),
                         errors=[names.LAMBDA_THROTTLED], result_path=ERROR_PATH)
        charge.add_catch(to_dead_letter(names.CHARGE), errors=["States.ALL"], result_path=ERROR_PATH)
        credit_wallet = task(names.CREDIT_WALLET, wallet, "$.wallet")
        credit_wallet.add_catch(to_dead_letter(names.CREDIT_WALLET), errors=["States.ALL"], result_path=ERROR_PATH)
        record_ledger = task(names.RECORD_LEDGER, ledger, "$.ledger")
        record_ledger.add_catch(to_dead_letter(names.RECORD_LEDGER), errors=["States.ALL"], result_path=ERROR_PATH)

        outcome = (
            sfn.Choice(self, names.CHARGE_OUTCOME)
            .when(
                sfn.Condition.string_equals("$.charge.outcome", "succeeded"),
                credit_wallet.next(record_ledger).next(mark_succeeded),
            )
            .when(sfn.Condition.string_equals("$.charge.outcome", "failed"), mark_failed)
            .when(sfn.Condition.string_equals("$.charge.outcome", "pending"), mark_pending)
            .when(sfn.Condition.string_equals("$.charge.outcome", "parked"),
                  sfn.Succeed(self, names.CHARGE_PARKED, comment="PSP down, nothing sent: the sweeper drives it later"))
        )
        # No default: an outcome outside the four fails the execution (ExecutionsFailed alarm) and leaves the
        # charge EXECUTING for the sweeper, rather than guessing whether money moved.

        log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/vendedlogs/states/{Aws.STACK_NAME}-{names.STATE_MACHINE}",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=removal_policy,
        )
        self.state_machine = sfn.StateMachine(
            self,
            names.STATE_MACHINE,
            state_machine_type=sfn.StateMachineType.EXPRESS,
            definition_body=sfn.DefinitionBody.from_chainable(charge.next(outcome)),
            timeout=Duration.minutes(5),  # the Express maximum
            # ERROR only, without execution data: order details stay out of the logs (the DLQ carries them).
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ERROR, include_execution_data=False),
            tracing_enabled=True,  # X-Ray, sampled by the account's sampling rules (README "Tracing")
        )
        acknowledge(
            self.state_machine,
            "AwsSolutions-SF1",
            "ERROR level without execution data: ALL would log every transition of every order (cost, and order "
            "details in logs); failures reach WorkflowDlq with their input, and each function logs its own steps.",
        )
        acknowledge(
            self.state_machine.role,
            "AwsSolutions-IAM5",
            "CDK's LambdaInvoke grant covers the task functions' versions (<arn>:*); CloudWatch Logs delivery "
            "actions (logs:CreateLogDelivery and friends) and X-Ray's PutTraceSegments support no resource-level "
            "permissions (Resource *).",
            "Resource::*",
            *(f"Resource::{arn_placeholder(fn)}:*" for fn in (executor, wallet, ledger, finalize)),
        )
