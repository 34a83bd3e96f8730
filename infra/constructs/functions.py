"""The Lambda functions of docs/design.md, their triggers and one least-privilege role each.

Code: one asset of the repository root that keeps only `functions/`, so handlers read `functions.<part>...`.
Dependencies: the layers of `build/layer/<name>` (scripts/build_layer.py), each function only those it imports.
Each function logs to its own LogGroup (no log-retention custom resource) and gets exactly the table actions,
queues and parameters it uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from aws_cdk import ArnFormat, Duration, IgnoreMode, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra import governor, names
from infra.constructs.queues import Queues
from infra.constructs.tables import Tables
from infra.nag import acknowledge, arn_placeholder
from infra.psp_context import PspSettings

RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.ARM_64
# Git-style patterns on the repository root: drop every top-level entry but functions/, and bytecode.
CODE_EXCLUDES = ["/*", "!/functions/", "__pycache__/", "*.pyc"]

LAYER_STAMP = ".stamp"  # scripts/build_layer.py's record of what it built: not part of the layer
LAYER_METADATA = "MarketPayLayer"  # the layer's name on its template resource (scripts/function_sizes.py)
BASE_LAYER = "base"
# Every function gets the base layer; these also get the layers of the SDKs they import (the PSP SDK through
# functions/shared/psp.py, Arrow for recon). tests/infra/test_layer_sizes.py holds this to the imports.
EXTRA_LAYERS = {names.EXECUTOR.name: ("psp",), names.TRANSFER.name: ("psp",), names.RECON_FN.name: ("recon",),
                names.WEBHOOK_RECEIVER.name: ("psp",),  # the receiver verifies signatures with the stripe SDK
                names.REFUND_WORKER.name: ("psp",),
                names.WEBHOOK_PROCESSOR.name: ("psp",)}  # refund events: apply_psp_refund's reversal
LAYERS = (BASE_LAYER, *sorted({layer for extra in EXTRA_LAYERS.values() for layer in extra}))

READ = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"]
# TransactWriteItems has no IAM action of its own: each item needs the action it performs.
WRITE = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"]


class Functions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        tables: Tables,
        queues: Queues,
        bucket: s3.IBucket,
        repo_root: Path,
        layer_dir: Path,
        psp_key_parameter: str,
        removal_policy: RemovalPolicy,
        psp: PspSettings | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        psp = psp or PspSettings()
        self._removal_policy = removal_policy
        self._tables = tables
        self._queues = queues
        self._added: dict[str, lambda_.Function] = {}  # add_function's, by name
        self._code = lambda_.Code.from_asset(str(repo_root), exclude=CODE_EXCLUDES, ignore_mode=IgnoreMode.GIT)
        self._layers = {name: self._layer(name, layer_dir / name) for name in LAYERS}
        # Table names for every function: functions/shared/config.py requires them at cold start. A name is
        # not a permission; the roles below decide what each function may touch.
        self._common_env = {
            names.ENV_PAYMENT_EVENTS_TABLE: tables.payment_events.table_name,
            names.ENV_PAYMENT_ORDERS_TABLE: tables.payment_orders.table_name,
            names.ENV_WALLET_TABLE: tables.wallet.table_name,
            names.ENV_LEDGER_TABLE: tables.ledger.table_name,
            names.ENV_RECON_TABLE: tables.recon.table_name,
            names.ENV_CHARGES_TABLE: tables.charges.table_name,
            names.ENV_SELLERS_TABLE: tables.sellers.table_name,
            names.ENV_PAYOUTS_TABLE: tables.payouts.table_name,
            names.ENV_METRICS_NAMESPACE: names.METRICS_NAMESPACE,
        }

        self.payment_api = self._function(
            names.PAYMENT_API,
            {
                names.ENV_ORDERS_QUEUE_URL: queues.orders.queue_url,
                names.ENV_PAYOUTS_QUEUE_URL: queues.payouts.queue_url,
                # It routes each charge while validating and placing a checkout (functions/payment/schemas.py);
                # no PSP key: it never calls a PSP. It reads the breakers to route around a PSP that is down.
                **psp.router_env(),
                names.ENV_PSP_HEALTH_TABLE: tables.psp_health.table_name,
            },
        )
        self.order_starter = self._function(names.ORDER_STARTER)
        self.executor = self._function(
            names.EXECUTOR,
            # Empty base = the real Stripe API; the key is read from SSM at cold start.
            # No PSP_ROUTING: it charges at the PSP recorded on the charge when the API placed it (work.psp).
            {names.ENV_PSP_API_BASE: "", names.ENV_PSP_API_KEY_PARAMETER: psp_key_parameter,
             names.ENV_PSP_HEALTH_TABLE: tables.psp_health.table_name, **psp.executor_env()},
        )
        # The throughput governor: at most this many charges talk to the PSP at once (infra/governor.py).
        self.executor.node.default_child.reserved_concurrent_executions = governor.concurrency(
            names.EXECUTOR.name, governor.rate_limit(self))
        self.wallet = self._function(names.WALLET_FN)
        self.ledger = self._function(names.LEDGER_FN)
        self.finalize = self._function(names.FINALIZE)
        self.sweeper = self._function(
            names.SWEEPER,
            {
                names.ENV_ORDERS_QUEUE_URL: queues.orders.queue_url,
                names.ENV_WORKFLOW_DLQ_URL: queues.workflow_dlq.queue_url,
                names.ENV_PAYOUTS_QUEUE_URL: queues.payouts.queue_url,
                names.ENV_PAYOUTS_DLQ_URL: queues.payouts_dlq.queue_url,
            },
        )
        self.transfer = self._function(
            names.TRANSFER,
            {
                names.ENV_PSP_API_BASE: "",
                names.ENV_PSP_API_KEY_PARAMETER: psp_key_parameter,
                names.ENV_PAYOUTS_QUEUE_URL: queues.payouts.queue_url,
                names.ENV_PAYOUTS_DLQ_URL: queues.payouts_dlq.queue_url,
            },
        )
        self.recon = self._function(
            names.RECON_FN,
            # A settled charge still NOT_STARTED is sent back to the orders queue (functions/recon/adapters.py).
            {
                names.ENV_SETTLEMENT_BUCKET: bucket.bucket_name,
                names.ENV_REVIEW_QUEUE_URL: queues.review.queue_url,
                names.ENV_ORDERS_QUEUE_URL: queues.orders.queue_url,
            },
        )

        acknowledge(
            self,
            "AwsSolutions-L1",
            "Python 3.13, not 3.14: the recon layer's pins (pyarrow 20.0.0, numpy 2.2.6) publish no cp314 "
            "wheels; the runtime moves together with them (docs/decisions.md, 2026-12-04).",
        )
        self._grant_table_access()
        self._grant_queue_access()
        # The Executor charges at Adyen and the Refund worker refunds there (infra/constructs/refunds.py): they alone
        # read Adyen's key (functions/shared/psp.py client_for).
        self._grant_psp_key(self.executor, psp_key_parameter, psp.adyen_key_parameter)
        self._grant_psp_key(self.transfer, psp_key_parameter)
        self._grant_settlement_access(bucket)
        self._add_triggers()

    # --- construction -------------------------------------------------------------------------------------

    def _layer(self, name: str, folder: Path) -> lambda_.LayerVersion:
        layer = lambda_.LayerVersion(
            self,
            f"{name.capitalize()}Layer",
            code=lambda_.Code.from_asset(str(folder), exclude=[LAYER_STAMP]),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description=f"MarketPay {name} layer (scripts/build_layer.py)",
        )
        layer.node.default_child.add_metadata(LAYER_METADATA, name)
        return layer

    def _function(self, spec: names.FunctionSpec, env: dict[str, str] | None = None) -> lambda_.Function:
        role = iam.Role(
            self,
            f"{spec.name}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"MarketPay {spec.name}: least privilege",
        )
        log_group = logs.LogGroup(
            self,
            f"{spec.name}Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=self._removal_policy,
        )
        log_group.grant_write(role)
        acknowledge(role, "AwsSolutions-IAM5", "X-Ray active tracing (README \"Tracing\"): PutTraceSegments and "
                    "PutTelemetryRecords support no resource-level permissions (Resource *).", "Resource::*")
        return lambda_.Function(
            self,
            spec.name,
            code=self._code,
            handler=spec.handler,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            memory_size=spec.memory_mb,
            timeout=Duration.seconds(spec.timeout_s),
            layers=[self._layers[name] for name in (BASE_LAYER, *EXTRA_LAYERS.get(spec.name, ()))],
            role=role,
            log_group=log_group,
            # Sampled by Lambda (the first request each second, then 5 %); no Tracer in the code (decisions.md).
            tracing=lambda_.Tracing.ACTIVE,
            environment={**self._common_env, **names.log_env(spec), names.ENV_SERVICE_NAME: spec.service,
                         **(env or {})},
        )

    def add_function(self, spec: names.FunctionSpec, env: dict[str, str] | None = None) -> lambda_.Function:
        """A function of another capability's construct (webhooks.py, notifications.py): the same code,
        layers, log group and own role as the others, and listed in `all` (so it gets its Errors alarm)."""
        fn = self._function(spec, env)
        self._added[spec.name] = fn
        return fn

    @property
    def all(self) -> dict[str, lambda_.Function]:
        return {
            names.PAYMENT_API.name: self.payment_api,
            names.ORDER_STARTER.name: self.order_starter,
            names.EXECUTOR.name: self.executor,
            names.WALLET_FN.name: self.wallet,
            names.LEDGER_FN.name: self.ledger,
            names.FINALIZE.name: self.finalize,
            names.SWEEPER.name: self.sweeper,
            names.RECON_FN.name: self.recon,
            names.TRANSFER.name: self.transfer,
            **self._added,
        }

    # --- permissions --------------------------------------------------------------------------------------

    @staticmethod
    def _allow(fn: lambda_.Function, actions: Iterable[str], resources: Iterable[str]) -> None:
        fn.add_to_role_policy(iam.PolicyStatement(actions=sorted(set(actions)), resources=list(resources)))

    def _table(self, fn: lambda_.Function, table: dynamodb.Table, actions: Iterable[str]) -> None:
        self._allow(fn, actions, [table.table_arn])

    def _grant_table_access(self) -> None:
        t = self._tables
        get_update = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
        # PaymentApi stores event + orders + charges in one TransactWriteItems and answers status reads.
        self._table(self.payment_api, t.payment_events, READ + WRITE)
        self._table(self.payment_api, t.payment_orders, READ + WRITE)
        # PutItem: a checkout's charges; GetItem, UpdateItem: a check or money order's funds recorded (issue 17)
        self._table(self.payment_api, t.charges, ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem"])
        # OrderStarter reads the charge, moves it (then its orders) to EXECUTING, then starts its workflow.
        self._table(self.order_starter, t.charges, get_update)
        self._table(self.order_starter, t.payment_orders, ["dynamodb:UpdateItem"])
        # Executor counts its PSP calls on the charge and records the PSP's reference and key generation.
        self._table(self.executor, t.charges, get_update)
        # ... and reads and moves the PSPs' circuit breakers (functions/shared/breaker.py).
        self._table(self.executor, t.psp_health, get_update)
        # PaymentApi only reads them: failover routes new charges around a PSP whose breaker is open.
        self._table(self.payment_api, t.psp_health, ["dynamodb:GetItem"])
        # Wallet: movement guard + balance in one transaction; balances read by query.
        self._table(self.wallet, t.wallet, READ + WRITE)
        # Ledger transactions are immutable: conditional put, and a read to compare on conflict.
        self._table(self.ledger, t.ledger, ["dynamodb:GetItem", "dynamodb:PutItem"])
        # Finalize marks the orders, takes them off the event's pending set, then marks the charge.
        self._table(self.finalize, t.payment_orders, get_update)
        self._table(self.finalize, t.payment_events, get_update)
        self._table(self.finalize, t.charges, get_update)
        # Sweeper reads only the charges' sparse sweep index, then updates the charges it finds.
        self._allow(self.sweeper, ["dynamodb:Query"], [f"{t.charges.table_arn}/index/{names.SWEEP_INDEX}"])
        self._table(self.sweeper, t.charges, get_update)
        # ... and takes a dead-lettered charge's orders out of the open-orders index.
        self._table(self.sweeper, t.payment_orders, ["dynamodb:UpdateItem"])
        # Recon reads orders and the ledger in batches and through indexes (never a whole table), writes fee
        # transactions, and keeps its own guards, runs and carried orders.
        self._table(self.recon, t.payment_orders, READ)
        # ... and hands a settled charge still in progress back (functions/recon/adapters.py): reads it, puts a
        # dead-lettered one and its orders back under the sweeper's watch, or begins its next attempt.
        self._table(self.recon, t.charges, get_update)
        self._table(self.recon, t.payment_orders, ["dynamodb:UpdateItem"])
        self._table(self.recon, t.payment_events, ["dynamodb:BatchGetItem"])  # a checkout's orders, by currency
        # A bank deposit file (issue 17) against the day's offline receipts.
        self._allow(self.recon, ["dynamodb:Query"], [f"{t.charges.table_arn}/index/{names.RECEIPTS_INDEX}"])
        self._allow(self.recon, ["dynamodb:Query"], [f"{t.payment_orders.table_arn}/index/{names.CREATED_INDEX}",
                                                     f"{t.payment_orders.table_arn}/index/{names.REFERENCE_INDEX}"])
        self._table(self.recon, t.ledger, [*READ, "dynamodb:PutItem"])
        self._allow(self.recon, ["dynamodb:Query"], [f"{t.ledger.table_arn}/index/{names.LEDGER_ORDER_INDEX}"])
        self._table(self.recon, t.recon, [*READ, *WRITE, "dynamodb:DeleteItem"])
        self._grant_payout_tables()

    def _index(self, fn: lambda_.Function, table: dynamodb.Table, *indexes: str) -> None:
        self._allow(fn, ["dynamodb:Query"], [f"{table.table_arn}/index/{index}" for index in indexes])

    def _grant_payout_tables(self) -> None:
        t = self._tables
        # PaymentApi registers sellers, releases pay-outs (creating the item of an order settled before pay-outs
        # existed), wakes a seller's waiting pay-outs, and reads balances and statements from the wallet.
        self._table(self.payment_api, t.sellers, READ + WRITE)
        self._table(self.payment_api, t.payouts, READ + WRITE)
        self._index(self.payment_api, t.payouts, names.AWAITING_INDEX)
        self._table(self.payment_api, t.wallet, READ)
        self._index(self.payment_api, t.wallet, names.WALLET_STATEMENT_INDEX)
        # Finalize stores each SUCCESS order's HELD pay-out (put if new), with its seller's auto-release delay.
        self._table(self.finalize, t.payouts, ["dynamodb:PutItem"])
        self._table(self.finalize, t.sellers, READ)
        # Transfer applies the release and the transfer to the wallet and the ledger, and moves the pay-out.
        self._table(self.transfer, t.payouts, READ + WRITE)
        self._table(self.transfer, t.sellers, READ)
        self._table(self.transfer, t.wallet, READ + WRITE)
        self._table(self.transfer, t.ledger, READ + ["dynamodb:PutItem"])
        # Sweeper: the pay-outs due (auto-release, lost messages, retries), through their sparse index.
        self._table(self.sweeper, t.payouts, READ + WRITE)
        self._index(self.sweeper, t.payouts, names.SWEEP_INDEX)
        self._table(self.sweeper, t.sellers, READ)
        # Recon: our transfers of a window, through their sparse index.
        self._table(self.recon, t.payouts, READ)
        self._index(self.recon, t.payouts, names.TRANSFERRED_INDEX)

    def _grant_queue_access(self) -> None:
        q = self._queues
        send = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
        self._allow(self.payment_api, send, [q.orders.queue_arn])
        self._allow(self.sweeper, send, [q.orders.queue_arn, q.workflow_dlq.queue_arn])
        self._allow(self.recon, send, [q.review.queue_arn, q.orders.queue_arn])
        self._allow(self.payment_api, send, [q.payouts.queue_arn])
        self._allow(self.sweeper, send, [q.payouts.queue_arn, q.payouts_dlq.queue_arn])
        self._allow(self.transfer, send, [q.payouts.queue_arn, q.payouts_dlq.queue_arn])

    def _grant_psp_key(self, fn: lambda_.Function, *parameters: str) -> None:
        stack = Stack.of(self)
        parameter_arns = [
            stack.format_arn(
                service="ssm",
                resource="parameter",
                resource_name=parameter.lstrip("/"),
                arn_format=ArnFormat.SLASH_RESOURCE_NAME,
            )
            for parameter in dict.fromkeys(parameters)  # once each, in order
        ]
        self._allow(fn, ["ssm:GetParameter"], parameter_arns)
        # The SecureString's key is chosen when the parameter is created (outside CloudFormation), so any key
        # of the account, but only when SSM decrypts on the function's behalf.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt"],
                resources=[stack.format_arn(service="kms", resource="key", resource_name="*")],
                conditions={"StringEquals": {"kms:ViaService": f"ssm.{stack.region}.amazonaws.com"}},
            )
        )
        acknowledge(
            fn.role,
            "AwsSolutions-IAM5",
            "The PSP key's SecureString is created outside CloudFormation with a key chosen then; kms:Decrypt is "
            "limited to decryption through SSM (kms:ViaService) in this account and region.",
            f"Resource::arn:<AWS::Partition>:kms:{stack.region}:<AWS::AccountId>:key/*",
        )

    def _grant_settlement_access(self, bucket: s3.IBucket) -> None:
        self._allow(self.recon, ["s3:GetObject"], [bucket.arn_for_objects(f"{names.INCOMING_PREFIX}*")])
        # Quarantine = copy to quarantine/ then delete the incoming object.
        self._allow(self.recon, ["s3:DeleteObject"], [bucket.arn_for_objects(f"{names.INCOMING_PREFIX}*")])
        self._allow(
            self.recon,
            ["s3:PutObject"],
            [
                bucket.arn_for_objects(f"{names.REPORTS_PREFIX}*"),
                bucket.arn_for_objects(f"{names.QUARANTINE_PREFIX}*"),
            ],
        )
        # Reports are streamed with upload_fileobj: large ones go multipart, and a failed one is aborted.
        self._allow(self.recon, ["s3:AbortMultipartUpload"], [bucket.arn_for_objects(f"{names.REPORTS_PREFIX}*")])
        bucket_arn = arn_placeholder(bucket)
        acknowledge(
            self.recon.role,
            "AwsSolutions-IAM5",
            "Object permissions are per prefix: read and delete only incoming/, write only reports/ and "
            "quarantine/; object keys are not known in advance.",
            *(
                f"Resource::{bucket_arn}/{prefix}*"
                for prefix in (names.INCOMING_PREFIX, names.REPORTS_PREFIX, names.QUARANTINE_PREFIX)
            ),
        )

    def wire_state_machine(self, machine: sfn.IStateMachine) -> None:
        """Functions that start workflows: OrderStarter, the Sweeper (re-drives) and Recon."""
        for fn in (self.order_starter, self.sweeper, self.recon):
            fn.add_environment(names.ENV_STATE_MACHINE_ARN, machine.state_machine_arn)
            self._allow(fn, ["states:StartExecution"], [machine.state_machine_arn])

    # --- triggers -----------------------------------------------------------------------------------------

    def _add_triggers(self) -> None:
        self.order_starter.add_event_source(
            sources.SqsEventSource(
                self._queues.orders,
                batch_size=10,
                max_batching_window=Duration.seconds(1),
                report_batch_item_failures=True,
            )
        )
        self.recon.add_event_source(sources.SqsEventSource(self._queues.recon, batch_size=1))
        self.transfer.add_event_source(
            sources.SqsEventSource(self._queues.payouts, batch_size=10, report_batch_item_failures=True,
                                   max_concurrency=governor.concurrency(names.TRANSFER.name, governor.rate_limit(self)))
        )
        events.Rule(
            self,
            names.SCHEDULE,
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(self.sweeper, retry_attempts=0)],
            description="Re-drives orders stuck before or inside their workflow",
        )

    # --- what other constructs' functions need (infra/constructs/webhooks.py) ----------------------------

    def grant_secure_parameter(self, fn: lambda_.Function, *parameters: str) -> None:
        """Read (and decrypt through SSM) SecureString parameters created outside CloudFormation."""
        self._grant_psp_key(fn, *parameters)

    def allow(self, fn: lambda_.Function, actions: Iterable[str], resources: Iterable[str]) -> None:
        self._allow(fn, actions, resources)
