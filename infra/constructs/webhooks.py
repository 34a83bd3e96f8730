"""Webhooks in: POST /v1/webhooks/stripe and /v1/webhooks/adyen -> WebhookReceiver -> WebhookQueue (+ WebhookDlq)
-> WebhookProcessor, which deduplicates by event id in WebhookEvents (TTL 30 days) and re-drives the existing paths.

Least privilege: the receiver reads two SSM SecureStrings (Stripe's signing secret, Adyen's HMAC key) and sends to
WebhookQueue, nothing else; the routes have no authorizer (the PSPs' signatures authenticate them). The processor
reads and writes what its handlers touch: the charges (a re-drive brought forward), sellers (facts of their
accounts, through the psp_account_id index), pay-outs (waking those awaiting an account), PayoutsQueue and ReviewQueue.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import governor, names
from infra.constructs.functions import READ, WRITE, Functions
from infra.constructs.queues import Queues
from infra.constructs.tables import Tables
from infra.nag import acknowledge
from infra.psp_context import PspSettings

_S = dynamodb.AttributeType.STRING
_VISIBILITY_FACTOR = 6  # as infra/constructs/queues.py: 6x the consumer's timeout (above the processor's lease)


class Webhooks(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        tables: Tables,
        queues: Queues,
        functions: Functions,
        http_api: apigw.HttpApi,
        secret_parameter: str,
        removal_policy: RemovalPolicy,
        psp: PspSettings | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        psp = psp or PspSettings()
        self.events_table = dynamodb.Table(
            self,
            names.WEBHOOK_EVENTS,
            partition_key=dynamodb.Attribute(name="event_id", type=_S),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=names.WEBHOOK_TTL_ATTRIBUTE,
            removal_policy=removal_policy,
        )
        # Connect events name the account, not the seller: the sellers of an account, sparse and keys only.
        tables.sellers.add_global_secondary_index(
            index_name=names.SELLER_ACCOUNT_INDEX,
            partition_key=dynamodb.Attribute(name="psp_account_id", type=_S),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        self.dlq = sqs.Queue(
            self,
            names.WEBHOOK_DLQ,
            retention_period=Duration.days(14),
            visibility_timeout=Duration.minutes(5),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.queue = sqs.Queue(
            self,
            names.WEBHOOK_QUEUE,
            visibility_timeout=Duration.seconds(names.WEBHOOK_PROCESSOR.timeout_s * _VISIBILITY_FACTOR),
            retention_period=Duration.days(4),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=names.MAX_RECEIVE_COUNT),
        )

        # One receiver for both PSPs: Stripe's signing secret, and Adyen's HMAC key (POST /v1/webhooks/adyen).
        self.receiver = functions.add_function(
            names.WEBHOOK_RECEIVER,
            {names.ENV_WEBHOOK_QUEUE_URL: self.queue.queue_url, names.ENV_WEBHOOK_SECRET_PARAMETER: secret_parameter,
             **psp.receiver_env()},
        )
        functions.grant_secure_parameter(self.receiver, secret_parameter, psp.adyen_hmac_key_parameter)
        functions.allow(self.receiver, ["sqs:SendMessage"], [self.queue.queue_arn])

        self.processor = functions.add_function(
            names.WEBHOOK_PROCESSOR,
            {
                names.ENV_WEBHOOK_EVENTS_TABLE: self.events_table.table_name,
                names.ENV_PAYOUTS_QUEUE_URL: queues.payouts.queue_url,
                names.ENV_REVIEW_QUEUE_URL: queues.review.queue_url,
            },
        )
        p = self.processor
        functions.allow(p, ["dynamodb:GetItem", "dynamodb:UpdateItem"], [self.events_table.table_arn])
        functions.allow(p, ["dynamodb:GetItem", "dynamodb:UpdateItem"], [tables.charges.table_arn])
        functions.allow(p, [*READ, "dynamodb:UpdateItem"], [tables.sellers.table_arn])
        functions.allow(p, ["dynamodb:Query"], [f"{tables.sellers.table_arn}/index/{names.SELLER_ACCOUNT_INDEX}"])
        functions.allow(p, [*READ, *WRITE], [tables.payouts.table_arn])
        functions.allow(p, ["dynamodb:Query"], [f"{tables.payouts.table_arn}/index/{names.AWAITING_INDEX}"])
        functions.allow(p, ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                        [queues.payouts.queue_arn, queues.review.queue_arn])
        p.add_event_source(sources.SqsEventSource(
            self.queue, batch_size=10, report_batch_item_failures=True,
            max_concurrency=governor.concurrency(names.WEBHOOK_PROCESSOR.name, governor.rate_limit(self))))

        # Neither PSP can send an API key or SigV4: each route's receiver verifies the PSP's signature first.
        for path, name, why in (
            (names.WEBHOOK_PATH, "StripeWebhooks",
             "Stripe cannot send an API key or SigV4: the receiver verifies Stripe-Signature (HMAC-SHA256 over the raw "
             "body, 300 s tolerance) and answers 400 to anything else before reading the body "
             "(functions/webhooks/receiver.py; docs/threat-model.md)."),
            (names.ADYEN_WEBHOOK_PATH, "AdyenWebhooks",
             "Adyen cannot send an API key or SigV4: the receiver verifies each notification item's hmacSignature "
             "(HMAC-SHA256 with our HMAC key, Adyen's library) and answers 400 to anything else "
             "(functions/webhooks/adyen_receiver.py)."),
        ):
            (route,) = http_api.add_routes(
                path=path,
                methods=[apigw.HttpMethod.POST],
                integration=integrations.HttpLambdaIntegration(
                    name, self.receiver, payload_format_version=apigw.PayloadFormatVersion.VERSION_2_0
                ),
            )
            acknowledge(route, "AwsSolutions-APIG4", why)

    def dead_letter_queues(self) -> dict[str, sqs.Queue]:
        return {names.WEBHOOK_DLQ: self.dlq}
