"""The HTTP API (API Gateway v2): every route to the PaymentApi function behind the API-key authorizer, payload
2.0, throttled, logged; and the API keys' table."""

from __future__ import annotations

import jsii
from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw_v1
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import names
from infra.constructs.functions import Functions
from infra.nag import acknowledge

# Account-level default is 10,000 rps; a storefront backend needs far less, and a runaway client must not
# exhaust the account's Lambda concurrency.
RATE_LIMIT = 200
BURST_LIMIT = 400

ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","requestTime":"$context.requestTime",'
    '"httpMethod":"$context.httpMethod","routeKey":"$context.routeKey","status":"$context.status",'
    '"responseLength":"$context.responseLength","integrationError":"$context.integrationErrorMessage",'
    '"latency":"$context.responseLatency"}'
)


class Api(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, functions: Functions, removal_policy: RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)
        self.keys_table = dynamodb.Table(
            self,
            names.API_KEYS,
            partition_key=dynamodb.Attribute(name="key_hash", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=removal_policy,
        )
        # One counter per client and second: each lives a minute (TTL), so the table stays small.
        self.rate_table = dynamodb.Table(
            self,
            names.API_RATE_WINDOWS,
            partition_key=dynamodb.Attribute(name="window", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=names.API_RATE_TTL_ATTRIBUTE,
            removal_policy=RemovalPolicy.DESTROY,  # counters of past seconds: nothing to keep
        )
        acknowledge(
            self.rate_table,
            "AwsSolutions-DDB3",
            "Request counters of one second each, expiring after 60 s: a point-in-time restore would bring back "
            "nothing anyone needs.",
        )
        self.authorizer_function = functions.add_function(
            names.API_AUTHORIZER,
            {names.ENV_API_KEYS_TABLE: self.keys_table.table_name,
             names.ENV_API_RATE_TABLE: self.rate_table.table_name},
        )
        functions.allow(self.authorizer_function, ["dynamodb:GetItem"], [self.keys_table.table_arn])
        functions.allow(self.authorizer_function, ["dynamodb:UpdateItem"], [self.rate_table.table_arn])
        # No identity source: a request without a key reaches the authorizer too, so PaymentApi can answer it in
        # the API's error shape; the authorizer keeps its own answers (functions/auth/authorizer.py).
        authorizer = authorizers.HttpLambdaAuthorizer(
            names.API_AUTHORIZER.name,
            self.authorizer_function,
            response_types=[authorizers.HttpLambdaResponseType.SIMPLE],
            identity_source=[],
            results_cache_ttl=Duration.seconds(0),
        )
        self.http_api = apigw.HttpApi(self, names.HTTP_API, api_name="MarketPay", create_default_stage=False)
        integration = integrations.HttpLambdaIntegration(
            "PaymentApi", functions.payment_api, payload_format_version=apigw.PayloadFormatVersion.VERSION_2_0
        )
        for method, path in names.ROUTES:
            self.http_api.add_routes(
                path=path, methods=[apigw.HttpMethod(method)], integration=integration, authorizer=authorizer
            )
        # Any other method on these paths reaches PaymentApi through `ANY <path>` (a method route is more specific,
        # so it wins) and is answered 405 with Allow; without these, API Gateway answers a bare 404.
        for path in dict.fromkeys(path for _, path in names.ROUTES):
            self.http_api.add_routes(
                path=path, methods=[apigw.HttpMethod.ANY], integration=integration, authorizer=authorizer
            )

        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=removal_policy
        )
        self.stage = apigw.HttpStage(
            self,
            "DefaultStage",
            http_api=self.http_api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigw.ThrottleSettings(rate_limit=RATE_LIMIT, burst_limit=BURST_LIMIT),
            access_log_settings=_AccessLogs(access_logs),
        )

    @property
    def url(self) -> str:
        return self.stage.url


@jsii.implements(apigw.IAccessLogSettings)
class _AccessLogs:
    """The stage's access log destination and format (JSON, one line per request)."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._destination = apigw.LogGroupLogDestination(log_group)

    @property
    def destination(self) -> apigw.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigw_v1.AccessLogFormat:
        return apigw_v1.AccessLogFormat.custom(ACCESS_LOG_FORMAT)
