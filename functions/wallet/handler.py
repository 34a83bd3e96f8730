"""Workflow task: credit the seller's pending balance once per order (held until delivery is confirmed)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.shared import clock
from functions.shared.models import OrderWork
from functions.shared.tables import WalletTable

logger = Logger(service="wallet")

PAYIN = "payin"


def credit_pending(work: OrderWork, table: WalletTable | None = None) -> bool:
    """True if credited now, False if this order's credit was applied before."""
    table = table or WalletTable.from_settings()
    return table.apply_movement(
        account_id=work.seller_account, kind=PAYIN, reference=work.payment_order_id, currency=work.currency,
        pending_delta=work.amount_minor, available_delta=0, now=clock.iso(),
    )


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    work = OrderWork.model_validate(event)
    credited = credit_pending(work)
    logger.info("wallet credit", extra={"payment_order_id": work.payment_order_id, "credited_now": credited})
    return {"credited": True, "applied_now": credited}
