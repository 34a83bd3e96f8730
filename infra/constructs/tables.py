"""The DynamoDB tables of docs/design.md: on-demand, point-in-time recovery, retained unless told otherwise.

`dynamodb.Table` (AWS::DynamoDB::Table), never TableV2: moto's CloudFormation cannot create the
AWS::DynamoDB::GlobalTable that TableV2 emits, and the local stack deploys this template.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from infra import names
from infra.nag import acknowledge

_S = dynamodb.AttributeType.STRING


class Tables(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, construct_id)

        def table(name: str, pk: str, sk: str | None = None) -> dynamodb.Table:
            return dynamodb.Table(
                self,
                name,
                partition_key=dynamodb.Attribute(name=pk, type=_S),
                sort_key=dynamodb.Attribute(name=sk, type=_S) if sk else None,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                removal_policy=removal_policy,
            )

        self.payment_events = table(names.PAYMENT_EVENTS, "checkout_id")
        self.payment_orders = table(names.PAYMENT_ORDERS, "payment_order_id")
        # No sweep index on the orders: the sweeper reads the charges' index below, and nothing in the product read
        # the orders' (2 index writes per order, docs/decisions.md 2026-12-06). Open orders still carry
        # sweep_shard/due_at (the dead-letter and requeue conditions read them); the harness filters on them.
        # One item per checkout and currency: the PSP charge its orders share (functions/shared/charges.py).
        self.charges = table(names.CHARGES, "charge_key")
        # Sparse index: only charges that are not final carry sweep_shard/due_at, so the sweeper reads only those.
        _add_sweep_index(self.charges)
        # Sparse: only a check's or money order's charge with its funds recorded carries receipt_day (issue 17); the
        # bank deposit file of a day is matched against that day's receipts (functions/recon/bank.py).
        self.charges.add_global_secondary_index(
            index_name=names.RECEIPTS_INDEX,
            partition_key=dynamodb.Attribute(name="receipt_day", type=_S),
            sort_key=dynamodb.Attribute(name="charge_key", type=_S),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        # Reconciliation reads a file's window by creation hour, in shards so a busy hour is not one hot
        # partition (functions/shared/tables.created_bucket), and resolves rows by the PSP's reference.
        self.payment_orders.add_global_secondary_index(
            index_name=names.CREATED_INDEX,
            partition_key=dynamodb.Attribute(name="created_bucket", type=_S),
            sort_key=dynamodb.Attribute(name="created_at", type=_S),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        self.payment_orders.add_global_secondary_index(
            index_name=names.REFERENCE_INDEX,
            partition_key=dynamodb.Attribute(name="psp_reference", type=_S),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        self.wallet = table(names.WALLET, "account_id", "sk")
        # Only movement items carry statement_key (`<seller>#<shard>`): a seller's statement is one query per shard.
        # ALL: a statement line needs the whole movement, and a movement is written once.
        self.wallet.add_global_secondary_index(
            index_name=names.WALLET_STATEMENT_INDEX,
            partition_key=dynamodb.Attribute(name="statement_key", type=_S),
            sort_key=dynamodb.Attribute(name="created_at", type=_S),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        self.ledger = table(names.LEDGER, "transaction_id")
        # Sparse: only a transaction that records a PSP object of an order under the PSP's own id (a refund)
        # names its order, so reconciliation finds an order's refunds without reading the whole ledger.
        self.ledger.add_global_secondary_index(
            index_name=names.LEDGER_ORDER_INDEX,
            partition_key=dynamodb.Attribute(name="payment_order_id", type=_S),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        self.recon = table(names.RECON, "pk", "sk")
        self.sellers = table(names.SELLERS, "seller_account")
        # One pay-out per SUCCESS order. Sparse indexes: the sweeper's (only while something is due), recon's
        # window of our transfers (only once transferred), and the pay-outs waiting for a seller's account.
        self.payouts = table(names.PAYOUTS, "payment_order_id")
        _add_sweep_index(self.payouts)
        self.payouts.add_global_secondary_index(
            index_name=names.TRANSFERRED_INDEX,
            partition_key=dynamodb.Attribute(name="transferred_bucket", type=_S),
            sort_key=dynamodb.Attribute(name="transferred_at", type=_S),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        self.payouts.add_global_secondary_index(
            index_name=names.AWAITING_INDEX,
            partition_key=dynamodb.Attribute(name="awaiting_seller", type=_S),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        # One item per PSP: its circuit breaker (functions/shared/breaker.py). A few seconds of state, nothing to
        # restore: no point-in-time recovery, and it goes with the stack.
        self.psp_health = dynamodb.Table(
            self,
            names.PSP_HEALTH,
            partition_key=dynamodb.Attribute(name="psp", type=_S),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            removal_policy=RemovalPolicy.DESTROY,
        )
        acknowledge(
            self.psp_health,
            "AwsSolutions-DDB3",
            "A circuit breaker's state per PSP, rebuilt by the next calls: a point-in-time restore would bring back "
            "a stale state nobody wants.",
        )

    def by_name(self) -> dict[str, dynamodb.Table]:
        return {
            names.PAYMENT_EVENTS: self.payment_events,
            names.PAYMENT_ORDERS: self.payment_orders,
            names.WALLET: self.wallet,
            names.LEDGER: self.ledger,
            names.RECON: self.recon,
            names.CHARGES: self.charges,
            names.SELLERS: self.sellers,
            names.PAYOUTS: self.payouts,
            names.PSP_HEALTH: self.psp_health,
        }


def _add_sweep_index(table: dynamodb.Table) -> None:
    """Sparse, keys only: only items that carry sweep_shard and due_at (the open ones) are in it."""
    table.add_global_secondary_index(
        index_name=names.SWEEP_INDEX,
        partition_key=dynamodb.Attribute(name="sweep_shard", type=_S),
        sort_key=dynamodb.Attribute(name="due_at", type=_S),
        projection_type=dynamodb.ProjectionType.KEYS_ONLY,
    )
