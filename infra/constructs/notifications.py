"""Notifications out (issue 16c): status changes of orders and pay-outs, delivered signed to the storefront.

    PaymentOrders / Payouts stream (NEW_AND_OLD_IMAGES) -> Notifier -> NotificationsQueue -> Deliverer -> POST
                                                   \\-> NotificationStreamDlq     \\-> NotificationsDlq (3 days)

The tables come from the Tables construct; streams are switched on here (on their CloudFormation resource), so
a table added later (refunds, disputes) is watched with one more entry in `streamed` (infra/stack.py) and one
more StreamSource (functions/notify/events.py). The functions are made by the Functions construct
(add_function): same code asset, layers, log groups, one least-privilege role each.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import names
from infra.constructs.functions import Functions
from infra.nag import acknowledge

_DLQ_RETENTION = Duration.days(14)
# Longer than the Deliverer's 3-day retry window plus its longest wait (6 h): no event expires in the queue.
_QUEUE_RETENTION = Duration.days(4)
_VISIBILITY_FACTOR = 6  # as for the other queues: 6x the consumer's timeout


class Notifications(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Functions,
        streamed: dict[str, dynamodb.Table],
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.endpoints = dynamodb.Table(
            self,
            names.NOTIFICATION_ENDPOINTS,
            partition_key=dynamodb.Attribute(name="client_id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=removal_policy,
        )
        self.dlq = self._dlq(names.NOTIFICATIONS_DLQ)
        self.queue = sqs.Queue(
            self,
            names.NOTIFICATIONS_QUEUE,
            visibility_timeout=Duration.seconds(names.DELIVERER.timeout_s * _VISIBILITY_FACTOR),
            retention_period=_QUEUE_RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dlq, max_receive_count=names.NOTIFICATIONS_MAX_RECEIVE_COUNT
            ),
        )
        self.stream_dlq = self._dlq(names.NOTIFICATION_STREAM_DLQ)
        acknowledge(
            self.stream_dlq,
            "AwsSolutions-SQS3",
            "NotificationStreamDlq is the on-failure destination of the stream mappings (the positions of stream "
            "records the Notifier gave up on), read by on-call; a dead-letter queue of its own would hide them.",
        )

        self.notifier = functions.add_function(
            names.NOTIFIER, {names.ENV_NOTIFICATIONS_QUEUE_URL: self.queue.queue_url}
        )
        self.deliverer = functions.add_function(
            names.DELIVERER,
            {
                names.ENV_NOTIFICATION_ENDPOINTS_TABLE: self.endpoints.table_name,
                names.ENV_NOTIFICATIONS_QUEUE_URL: self.queue.queue_url,
                names.ENV_NOTIFICATIONS_DLQ_URL: self.dlq.queue_url,
            },
        )
        send = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
        _allow(self.notifier, send, [self.queue.queue_arn])
        # The Deliverer reads the endpoint (URL and secret), sets a failed message's next wait, dead-letters.
        _allow(self.deliverer, ["dynamodb:GetItem"], [self.endpoints.table_arn])
        _allow(self.deliverer, ["sqs:ChangeMessageVisibility"], [self.queue.queue_arn])
        _allow(self.deliverer, send, [self.dlq.queue_arn])
        # PaymentApi sets and shows the endpoint (PUT/GET /v1/notification_endpoint).
        functions.payment_api.add_environment(names.ENV_NOTIFICATION_ENDPOINTS_TABLE, self.endpoints.table_name)
        _allow(functions.payment_api, ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
               [self.endpoints.table_arn])

        # Lambda's stream mapping asks for ListStreams, an action with no resource-level permissions.
        _allow(self.notifier, ["dynamodb:ListStreams"], ["*"])
        acknowledge(
            self.notifier.role,
            "AwsSolutions-IAM5",
            "dynamodb:ListStreams supports no resource-level permissions; Lambda's DynamoDB stream mapping needs it. "
            "Reading records is limited to the watched tables' streams.",
            "Resource::*",
        )
        self.deliverer.add_event_source(
            sources.SqsEventSource(self.queue, batch_size=names.DELIVERER_BATCH_SIZE, report_batch_item_failures=True)
        )
        for name, table in streamed.items():
            self.watch(name, table)

    def watch(self, name: str, table: dynamodb.Table) -> lambda_.EventSourceMapping:
        """Switch the table's stream on (new and old images) and feed it to the Notifier."""
        resource = table.node.default_child
        assert isinstance(resource, dynamodb.CfnTable)
        resource.stream_specification = dynamodb.CfnTable.StreamSpecificationProperty(
            stream_view_type=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES.value
        )
        stream_arn = resource.attr_stream_arn
        _allow(self.notifier, ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
               [stream_arn])
        on_failure = sources.SqsDlq(self.stream_dlq)
        mapping = lambda_.EventSourceMapping(
            self,
            f"{name}Stream",
            target=self.notifier,
            event_source_arn=stream_arn,
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=names.NOTIFIER_STREAM_BATCH_SIZE,
            max_batching_window=Duration.seconds(1),
            bisect_batch_on_error=True,
            retry_attempts=names.NOTIFIER_STREAM_RETRIES,
            max_record_age=Duration.hours(names.NOTIFIER_MAX_RECORD_AGE_H),
            report_batch_item_failures=True,
            on_failure=on_failure,
        )
        return mapping

    def _dlq(self, name: str) -> sqs.Queue:
        return sqs.Queue(
            self,
            name,
            retention_period=_DLQ_RETENTION,
            visibility_timeout=Duration.minutes(5),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )

    def queues_by_name(self) -> dict[str, sqs.Queue]:
        return {
            names.NOTIFICATIONS_QUEUE: self.queue,
            names.NOTIFICATIONS_DLQ: self.dlq,
            names.NOTIFICATION_STREAM_DLQ: self.stream_dlq,
        }

    def dead_letter_queues(self) -> dict[str, sqs.Queue]:
        return {names.NOTIFICATIONS_DLQ: self.dlq, names.NOTIFICATION_STREAM_DLQ: self.stream_dlq}


def _allow(fn: lambda_.Function, actions: list[str], resources: list[str]) -> None:
    fn.add_to_role_policy(iam.PolicyStatement(actions=sorted(set(actions)), resources=resources))
