"""Disputes (issue 16: chargebacks): the Disputes table and the grants of the functions that use it. The webhook
processor applies charge.dispute.* events (functions/disputes/service.py): it reads and writes the dispute, the
orders' `dispute_ids` (and finds a charge's orders by the psp_reference index), the pay-outs' holds and shares,
the wallet's movements and the ledger's transactions. PaymentApi reads disputes (GET /v1/payments/{id})."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra import names
from infra.constructs.functions import READ, WRITE, Functions


class Disputes(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, functions: Functions, processor: lambda_.Function,
                 removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self, names.DISPUTES,
            partition_key=dynamodb.Attribute(name="dispute_id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            removal_policy=removal_policy)
        t = functions._tables
        processor.add_environment(names.ENV_DISPUTES_TABLE, self.table.table_name)
        functions._table(processor, self.table, READ + WRITE)
        functions._table(processor, t.payment_orders, READ + WRITE)
        functions._allow(processor, ["dynamodb:Query"],
                         [f"{t.payment_orders.table_arn}/index/{names.REFERENCE_INDEX}"])
        functions._table(processor, t.wallet, READ + WRITE)
        functions._table(processor, t.ledger, ["dynamodb:GetItem", "dynamodb:PutItem"])
        functions.payment_api.add_environment(names.ENV_DISPUTES_TABLE, self.table.table_name)
        functions._table(functions.payment_api, self.table, ["dynamodb:GetItem", "dynamodb:BatchGetItem"])
