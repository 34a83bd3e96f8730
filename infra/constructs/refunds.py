"""Refunds (issue 16 a): the Refunds table, RefundsQueue with its dead-letter queue, the Refund worker (SQS,
partial batch responses) and its grants, PaymentApi's access to them, and the refund path's business alarms (what one
seller owes past OWED_ALARM_THRESHOLD_MINOR, mismatches); RefundsDlq and the worker's error rate are alarmed with
every queue and function (infra/constructs/alarms.py)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import governor, names
from infra.constructs.alarms import Alarms
from infra.constructs.functions import READ, WRITE, Functions
from infra.constructs.notifications import Notifications
from infra.psp_context import PspSettings

_PERIOD = Duration.minutes(1)
_VISIBILITY_FACTOR = 6


class Refunds(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, functions: Functions, alarms: Alarms,
                 psp_key_parameter: str, removal_policy: RemovalPolicy, psp: PspSettings | None = None) -> None:
        super().__init__(scope, construct_id)
        psp = psp or PspSettings()
        self.table = dynamodb.Table(
            self, names.REFUNDS, partition_key=dynamodb.Attribute(name="refund_id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            removal_policy=removal_policy)
        self.dlq = sqs.Queue(self, names.REFUNDS_DLQ, retention_period=Duration.days(14),
                             visibility_timeout=Duration.minutes(5), encryption=sqs.QueueEncryption.SQS_MANAGED,
                             enforce_ssl=True)
        self.queue = sqs.Queue(
            self, names.REFUNDS_QUEUE,
            visibility_timeout=Duration.seconds(names.REFUND_WORKER.timeout_s * _VISIBILITY_FACTOR),
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=names.MAX_RECEIVE_COUNT))
        env = {names.ENV_REFUNDS_TABLE: self.table.table_name, names.ENV_REFUNDS_QUEUE_URL: self.queue.queue_url}
        self.worker = functions._function(names.REFUND_WORKER, {
            **env, names.ENV_REFUNDS_DLQ_URL: self.dlq.queue_url, names.ENV_PSP_API_BASE: "",
            names.ENV_PSP_API_KEY_PARAMETER: psp_key_parameter,
            # An Adyen-charged order is refunded at Adyen (functions/executor/refund.py): Adyen's account and key.
            **psp.executor_env()})
        self.worker.add_event_source(sources.SqsEventSource(
            self.queue, batch_size=10, report_batch_item_failures=True,
            max_concurrency=governor.concurrency(names.REFUND_WORKER.name, governor.rate_limit(self))))
        t, send = functions._tables, ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
        # The worker: the refund, the order's reservation (given back on failure), the pay-out's change, the
        # wallet's movements and balances, the ledger's transactions; the poll's message; the PSP key.
        functions._table(self.worker, self.table, READ + WRITE)
        functions._table(self.worker, t.payment_orders, READ + WRITE)
        functions._table(self.worker, t.payouts, READ + WRITE)
        functions._table(self.worker, t.wallet, READ + WRITE)
        functions._table(self.worker, t.ledger, ["dynamodb:GetItem", "dynamodb:PutItem"])
        functions._allow(self.worker, send, [self.queue.queue_arn])
        functions._grant_psp_key(self.worker, psp_key_parameter, psp.adyen_key_parameter)
        # PaymentApi: creates refunds (with the order's reservation, one transaction), reads them, sends them.
        for name, value in env.items():
            functions.payment_api.add_environment(name, value)
        functions._table(functions.payment_api, self.table, READ + WRITE)
        functions._allow(functions.payment_api, send, [self.queue.queue_arn])

        # The refund path's business alarms; RefundsDlq and the worker's error rate are in Alarms.rates_and_ages.
        for alarm_id, metric, threshold, description in (
            ("SellerOwedHigh", _refund_path_metric(names.OWED_METRIC, "MAX", "Maximum"),
             names.OWED_ALARM_THRESHOLD_MINOR,
             "A seller owes more than the threshold (reversals refused): netted from its next transfers"),
            ("RefundMismatch", _refund_path_metric("RefundMismatch", "SUM", "Sum"), 0,
             "The PSP's refund differs from ours (amount or charge): look at the refund before anything else"),
            ("RefundWaitingOnPayout", _refund_path_metric("RefundWaitingOnPayout", "SUM", "Sum"), 0,
             "A refund has waited over 24 h on its pay-out (FAILED, or a transfer stuck): fix the pay-out"),
            ("RefundFailedAfterSuccess", _refund_path_metric("RefundFailedAfterSuccess", "SUM", "Sum"), 0,
             "A refund the PSP had reported succeeded failed later: the money is back in our books, tell the buyer"),
            ("RefundNotificationOverdue", _refund_path_metric("RefundNotificationOverdue", "SUM", "Sum"), 0,
             "An Adyen refund has waited over 24 h for its REFUND notification: look it up in Adyen's Customer Area"),
        ):
            alarms.add(alarm_id, metric, threshold, description)

    def grant_refund_path(self, fn: lambda_.Function, *, functions: Functions, psp_key_parameter: str) -> None:
        """What `functions.executor.refund.apply_psp_refund` needs, for a function that calls it besides the
        worker (the WebhookProcessor, on refund events): the worker's grants on the refund, the order's
        reservation, the pay-out, the wallet and the ledger, sending the poll or wait message, and the PSP key
        (a finished refund's reversal). Its environment: the Refunds table and queue, the PSP's base and key."""
        fn.add_environment(names.ENV_REFUNDS_TABLE, self.table.table_name)
        fn.add_environment(names.ENV_REFUNDS_QUEUE_URL, self.queue.queue_url)
        fn.add_environment(names.ENV_PSP_API_BASE, "")
        fn.add_environment(names.ENV_PSP_API_KEY_PARAMETER, psp_key_parameter)
        t = functions._tables
        functions._table(fn, self.table, READ + WRITE)
        functions._table(fn, t.payment_orders, READ + WRITE)
        functions._table(fn, t.payouts, READ + WRITE)
        functions._table(fn, t.wallet, READ + WRITE)
        functions._table(fn, t.ledger, ["dynamodb:GetItem", "dynamodb:PutItem"])
        functions._allow(fn, ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"], [self.queue.queue_arn])
        functions._grant_psp_key(fn, psp_key_parameter)

    def stream_to(self, notifications: Notifications) -> None:
        """Refund status changes (`refund.<status>`) to the storefront: the table's stream to the Notifier, which
        finds the table by its name (functions/notify/events.py SOURCES)."""
        notifications.watch(names.REFUNDS, self.table)
        notifications.notifier.add_environment(names.ENV_REFUNDS_TABLE, self.table.table_name)


def _refund_path_metric(metric_name: str, combine: str, statistic: str) -> cloudwatch.MathExpression:
    """A refund-path metric from both functions that run the path (RefundWorker, and WebhookProcessor on the
    PSP's refund events), each publishing under its own service dimension."""
    metrics = {
        f"m{i}": cloudwatch.Metric(namespace=names.METRICS_NAMESPACE, metric_name=metric_name,
                                   dimensions_map={"service": spec.service}, period=_PERIOD, statistic=statistic)
        for i, spec in enumerate((names.REFUND_WORKER, names.WEBHOOK_PROCESSOR))
    }
    return cloudwatch.MathExpression(
        expression=f"{combine}([{', '.join(f'FILL({key}, 0)' for key in metrics)}])", using_metrics=metrics,
        period=_PERIOD, label=metric_name)
