"""Where the deployed system lives: queue URLs, table names and the state machine, from the stack's outputs.

Each value can be overridden (a CLI option, or the environment variable named in VALUES); the CloudFormation
stack is asked only when something is not overridden, once per run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from functions.shared import aws
from functions.shared import names as runtime
from functions.shared.config import reload_settings
from infra import names


class OpsError(Exception):
    """Something the operator must fix before the tool can go on (the message says what)."""


@dataclass(frozen=True)
class Value:
    """One thing the tool needs: its stack output and the environment variable that overrides it."""

    output: str
    env: str


VALUES: dict[str, Value] = {
    "orders_queue_url": Value(names.OUT_QUEUE_URLS[names.ORDERS_QUEUE], runtime.ENV_ORDERS_QUEUE_URL),
    "orders_dlq_url": Value(names.OUT_QUEUE_URLS[names.ORDERS_DLQ], runtime.ENV_ORDERS_DLQ_URL),
    "workflow_dlq_url": Value(names.OUT_QUEUE_URLS[names.WORKFLOW_DLQ], runtime.ENV_WORKFLOW_DLQ_URL),
    "recon_queue_url": Value(names.OUT_QUEUE_URLS[names.RECON_QUEUE], runtime.ENV_RECON_QUEUE_URL),
    "recon_dlq_url": Value(names.OUT_QUEUE_URLS[names.RECON_DLQ], runtime.ENV_RECON_DLQ_URL),
    "review_queue_url": Value(names.OUT_QUEUE_URLS[names.REVIEW_QUEUE], runtime.ENV_REVIEW_QUEUE_URL),
    "review_dlq_url": Value(names.OUT_QUEUE_URLS[names.REVIEW_DLQ], runtime.ENV_REVIEW_DLQ_URL),
    "payment_events_table": Value(names.OUT_TABLE_NAMES[names.PAYMENT_EVENTS], runtime.ENV_PAYMENT_EVENTS_TABLE),
    "payment_orders_table": Value(names.OUT_TABLE_NAMES[names.PAYMENT_ORDERS], runtime.ENV_PAYMENT_ORDERS_TABLE),
    "wallet_table": Value(names.OUT_TABLE_NAMES[names.WALLET], runtime.ENV_WALLET_TABLE),
    "ledger_table": Value(names.OUT_TABLE_NAMES[names.LEDGER], runtime.ENV_LEDGER_TABLE),
    "charges_table": Value(names.OUT_TABLE_NAMES[names.CHARGES], runtime.ENV_CHARGES_TABLE),
    "state_machine_arn": Value(names.OUT_STATE_MACHINE_ARN, runtime.ENV_STATE_MACHINE_ARN),
    "sellers_table": Value(names.OUT_TABLE_NAMES[names.SELLERS], runtime.ENV_SELLERS_TABLE),
    "payouts_table": Value(names.OUT_TABLE_NAMES[names.PAYOUTS], runtime.ENV_PAYOUTS_TABLE),
    "psp_health_table": Value(names.OUT_TABLE_NAMES[names.PSP_HEALTH], runtime.ENV_PSP_HEALTH_TABLE),
    "payouts_queue_url": Value(names.OUT_QUEUE_URLS[names.PAYOUTS_QUEUE], runtime.ENV_PAYOUTS_QUEUE_URL),
    "payouts_dlq_url": Value(names.OUT_QUEUE_URLS[names.PAYOUTS_DLQ], runtime.ENV_PAYOUTS_DLQ_URL),
    "notification_endpoints_table": Value(names.OUT_NOTIFICATION_ENDPOINTS_TABLE,
                                          runtime.ENV_NOTIFICATION_ENDPOINTS_TABLE),
    "notifications_queue_url": Value(names.OUT_NOTIFICATION_QUEUE_URLS[names.NOTIFICATIONS_QUEUE],
                                     runtime.ENV_NOTIFICATIONS_QUEUE_URL),
    "notifications_dlq_url": Value(names.OUT_NOTIFICATION_QUEUE_URLS[names.NOTIFICATIONS_DLQ],
                                   runtime.ENV_NOTIFICATIONS_DLQ_URL),
    "api_keys_table": Value(names.OUT_API_KEYS_TABLE, runtime.ENV_API_KEYS_TABLE),
    "refunds_table": Value(names.OUT_REFUNDS_TABLE, runtime.ENV_REFUNDS_TABLE),
    "refunds_queue_url": Value(names.OUT_REFUNDS_QUEUE, runtime.ENV_REFUNDS_QUEUE_URL),
    "settlement_bucket": Value(names.OUT_SETTLEMENT_BUCKET, runtime.ENV_SETTLEMENT_BUCKET),
}


@dataclass(frozen=True)
class Dlq:
    """A dead-letter queue and where its messages go back to (None: WorkflowDlq, redriven charge by charge)."""

    name: str
    key: str  # the short name typed on the command line
    url_value: str
    target_name: str | None
    target_value: str | None


DLQS: tuple[Dlq, ...] = (
    Dlq(names.ORDERS_DLQ, "orders", "orders_dlq_url", names.ORDERS_QUEUE, "orders_queue_url"),
    Dlq(names.WORKFLOW_DLQ, "workflow", "workflow_dlq_url", None, None),
    Dlq(names.RECON_DLQ, "recon", "recon_dlq_url", names.RECON_QUEUE, "recon_queue_url"),
    Dlq(names.REVIEW_DLQ, "review", "review_dlq_url", names.REVIEW_QUEUE, "review_queue_url"),
    # A FAILED payout's message only says why: moved back, the worker leaves it FAILED (`ops payouts retry`).
    Dlq(names.PAYOUTS_DLQ, "payouts", "payouts_dlq_url", names.PAYOUTS_QUEUE, "payouts_queue_url"),
    # An event not delivered in 3 days: moved back, it gets a new 3-day window (fix the storefront first).
    Dlq(names.NOTIFICATIONS_DLQ, "notifications", "notifications_dlq_url", names.NOTIFICATIONS_QUEUE,
        "notifications_queue_url"),
)


def find_dlq(text: str) -> Dlq:
    """`orders`, `OrdersDlq` or `orders-dlq` all name the same queue."""
    wanted = text.lower().replace("-", "").replace("_", "")
    for dlq in DLQS:
        if wanted in (dlq.key, dlq.name.lower()):
            return dlq
    known = ", ".join(d.key for d in DLQS)
    raise OpsError(f"unknown dead-letter queue {text!r}: use one of {known}")


@dataclass
class Resources:
    """Resolved lazily: explicit overrides, then the environment variables, then the outputs of `stack`."""

    stack: str = names.STACK_NAME
    overrides: dict[str, str] = field(default_factory=dict)
    _outputs: dict[str, str] | None = None

    def get(self, key: str) -> str:
        spec = VALUES[key]
        value = self.overrides.get(key) or os.environ.get(spec.env)
        if value:
            return value
        found = self.outputs().get(spec.output)
        if not found:
            option = "--" + key.replace("_", "-")
            raise OpsError(f"stack {self.stack} has no output {spec.output}: pass {option} (or set {spec.env})")
        return found

    def from_environment(self) -> list[str]:
        """The environment variables that override stack outputs in this run (shown to the operator)."""
        return [spec.env for key, spec in VALUES.items() if key not in self.overrides and os.environ.get(spec.env)]

    def outputs(self) -> dict[str, str]:
        if self._outputs is None:
            try:
                stacks = aws.client("cloudformation").describe_stacks(StackName=self.stack)["Stacks"]
            except ClientError as error:
                raise OpsError(f"cannot read stack {self.stack}: {error.response['Error'].get('Message')}"
                               f" (wrong region or endpoint? see `aws configure list`)") from error
            except BotoCoreError as error:
                raise OpsError(f"cannot reach CloudFormation: {error}") from error
            self._outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        return self._outputs

    def export_for_shared_code(self, *extra: str) -> None:
        """Give functions/shared (PaymentTables, queues.start_workflow, settings) the names the functions get;
        `extra`: more of VALUES' keys a command needs (the payout ones)."""
        for key in ("payment_events_table", "payment_orders_table", "wallet_table", "ledger_table",
                    "charges_table", "state_machine_arn", "orders_queue_url", "workflow_dlq_url", *extra):
            os.environ[VALUES[key].env] = self.get(key)
        reload_settings()


def describe_target(stack: str) -> str:
    """Where the tool points (stack, region, endpoint): printed at the top of every command."""
    region = boto3.session.Session().region_name or "no region set"
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS"
    return f"stack {stack} · {region} · {endpoint}"
