"""SQS queues of docs/design.md, each main queue with its own dead-letter queue; SSL enforced, SSE-SQS.

SSE-SQS (not the AWS-managed KMS key) because S3 notifications cannot write to a queue encrypted with aws/sqs.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import names
from infra.nag import acknowledge

_DLQ_RETENTION = Duration.days(14)
# AWS recommends a visibility timeout of 6x the consumer's timeout for Lambda event sources.
_VISIBILITY_FACTOR = 6


class Queues(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.orders_dlq = self._dlq(names.ORDERS_DLQ)
        self.orders = self._queue(
            names.ORDERS_QUEUE, self.orders_dlq, Duration.seconds(names.ORDER_STARTER.timeout_s * _VISIBILITY_FACTOR)
        )
        # Written by the state machine and the sweeper, read by on-call with the redrive tool: it is a
        # dead-letter queue itself, so it has none of its own.
        self.workflow_dlq = self._dlq(names.WORKFLOW_DLQ)
        acknowledge(
            self.workflow_dlq,
            "AwsSolutions-SQS3",
            "WorkflowDlq is the dead-letter queue of the state machine and the sweeper (written by them, read and "
            "redriven by on-call); a dead-letter queue of its own would only hide failed messages further.",
        )
        self.recon_dlq = self._dlq(names.RECON_DLQ)
        self.recon = self._queue(
            names.RECON_QUEUE, self.recon_dlq, Duration.seconds(names.RECON_FN.timeout_s * _VISIBILITY_FACTOR)
        )
        self.review_dlq = self._dlq(names.REVIEW_DLQ)
        self.review = self._queue(names.REVIEW_QUEUE, self.review_dlq, Duration.minutes(5), _DLQ_RETENTION)
        self.payouts_dlq = self._dlq(names.PAYOUTS_DLQ)
        self.payouts = self._queue(
            names.PAYOUTS_QUEUE, self.payouts_dlq, Duration.seconds(names.TRANSFER.timeout_s * _VISIBILITY_FACTOR)
        )

    def _dlq(self, name: str) -> sqs.Queue:
        return sqs.Queue(
            self,
            name,
            retention_period=_DLQ_RETENTION,
            visibility_timeout=Duration.minutes(5),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )

    def _queue(self, name: str, dlq: sqs.Queue, visibility: Duration, retention: Duration | None = None) -> sqs.Queue:
        return sqs.Queue(
            self,
            name,
            visibility_timeout=visibility,
            retention_period=retention,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=names.MAX_RECEIVE_COUNT),
        )

    def by_name(self) -> dict[str, sqs.Queue]:
        return {
            names.ORDERS_QUEUE: self.orders,
            names.ORDERS_DLQ: self.orders_dlq,
            names.WORKFLOW_DLQ: self.workflow_dlq,
            names.RECON_QUEUE: self.recon,
            names.RECON_DLQ: self.recon_dlq,
            names.REVIEW_QUEUE: self.review,
            names.REVIEW_DLQ: self.review_dlq,
            names.PAYOUTS_QUEUE: self.payouts,
            names.PAYOUTS_DLQ: self.payouts_dlq,
        }

    def dead_letter_queues(self) -> dict[str, sqs.Queue]:
        return {
            names.ORDERS_DLQ: self.orders_dlq,
            names.WORKFLOW_DLQ: self.workflow_dlq,
            names.RECON_DLQ: self.recon_dlq,
            names.REVIEW_DLQ: self.review_dlq,
            names.PAYOUTS_DLQ: self.payouts_dlq,
        }
