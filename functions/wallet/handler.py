"""Workflow task: credit each seller's pending balance once per order of the charge (held until delivery)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.shared import clock
from functions.shared.models import ChargeWork, OrderShare
from functions.shared.observability import service_metrics
from functions.shared.tables import WalletTable, transient_errors_retryable
from functions.wallet import movements

logger = Logger(service="wallet")
metrics = service_metrics()


def credit_pending(work: ChargeWork, order: OrderShare, table: WalletTable | None = None) -> bool:
    """True if credited now, False if this order's credit was applied before."""
    return movements.credit_pending(order.seller_account, order.payment_order_id, work.share(order), clock.iso(),
                                    table)


def credit_charge(work: ChargeWork) -> list[str]:
    """Every order's credit, each once; returns the ids credited by this call."""
    table = WalletTable.from_settings()
    return [order.payment_order_id for order in work.orders if credit_pending(work, order, table)]


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    work = ChargeWork.model_validate(event)
    logger.set_correlation_id(work.correlation_id or None)
    with transient_errors_retryable():
        credited = credit_charge(work)
    logger.info("wallet credits", extra={"charge_key": work.charge_key, "credited_now": credited})
    metrics.add_metric(name="WalletCredits", unit=MetricUnit.Count, value=len(credited))  # 0 on a replay
    return {"credited": True, "applied_now": credited}
