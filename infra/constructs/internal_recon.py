"""Internal reconciliation (issue 19): the InternalRecon function (functions/recon/internal_handler.py), its
nightly EventBridge schedule, its least-privilege role (reads the tables it compares, re-drives only the wallet
and ledger steps, writes only reports/internal/), and its alarms (infra/constructs/alarms.py)."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import names
from infra.constructs.alarms import Alarms
from infra.constructs.functions import READ, WRITE, Functions
from infra.nag import acknowledge, arn_placeholder

_SCAN = ["dynamodb:Scan"]


class InternalRecon(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, functions: Functions, bucket: s3.IBucket,
                 refunds_table: dynamodb.ITable, alarms: Alarms) -> None:
        super().__init__(scope, construct_id)
        self.function = functions.add_function(names.INTERNAL_RECON, {
            names.ENV_SETTLEMENT_BUCKET: bucket.bucket_name, names.ENV_REFUNDS_TABLE: refunds_table.table_name})
        fn, t = self.function, functions._tables
        # Compared, page by page: orders, ledger, wallet (balances and movements), pay-outs, refunds.
        for table in (t.payment_orders, t.ledger, t.wallet, t.payouts):
            functions._table(fn, table, _SCAN)
        functions._allow(fn, _SCAN, [refunds_table.table_arn])
        # The fixes: the charge read, then the workflow's own wallet step (movement guard + balance in one
        # transaction) and ledger step (conditional put, a read to compare on conflict).
        functions._table(fn, t.charges, ["dynamodb:GetItem"])
        functions._table(fn, t.wallet, READ + WRITE)
        functions._table(fn, t.ledger, ["dynamodb:GetItem", "dynamodb:PutItem"])
        functions._allow(fn, ["s3:PutObject", "s3:AbortMultipartUpload"],
                         [bucket.arn_for_objects(f"{names.INTERNAL_REPORTS_PREFIX}*")])
        acknowledge(fn.role, "AwsSolutions-IAM5", "Writes only its own reports, under reports/internal/ (one key per "
                    "run, not known in advance).",
                    f"Resource::{arn_placeholder(bucket)}/{names.INTERNAL_REPORTS_PREFIX}*")
        events.Rule(
            self, names.INTERNAL_RECON_SCHEDULE,
            schedule=events.Schedule.cron(**names.INTERNAL_RECON_CRON),
            targets=[targets.LambdaFunction(fn, retry_attempts=2)],
            description="Nightly internal reconciliation: orders, wallets, ledger, pay-outs and refunds",
        )
        alarms.internal_recon()
