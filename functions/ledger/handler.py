"""Workflow task: each order's double-entry pay-in transaction, written once (id payin#<payment_order_id>),
against the receivable of the PSP the order names."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.ledger import journal
from functions.shared.models import ChargeWork, OrderShare
from functions.shared.observability import service_metrics
from functions.shared.tables import transient_errors_retryable

logger = Logger(service="ledger")
metrics = service_metrics()


def record_payin(work: ChargeWork, order: OrderShare) -> tuple[str, bool]:
    transaction = journal.payin(order.payment_order_id, order.seller_account, work.share(order), order.psp)
    return transaction.transaction_id, journal.record(transaction)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    work = ChargeWork.model_validate(event)
    logger.set_correlation_id(work.correlation_id or None)
    with transient_errors_retryable():
        recorded = [record_payin(work, order) for order in work.orders]
    written = [transaction_id for transaction_id, now in recorded if now]
    logger.info("ledger transactions", extra={"charge_key": work.charge_key, "written_now": written})
    metrics.add_metric(name="LedgerTransactionsWritten", unit=MetricUnit.Count, value=len(written))  # 0 on a replay
    return {"transaction_ids": [t for t, _ in recorded], "recorded": True, "written_now": written}
