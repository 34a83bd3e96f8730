"""Workflow task: the order's double-entry pay-in transaction, written once (id payin#<payment_order_id>)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.ledger import journal
from functions.shared.config import settings
from functions.shared.models import OrderWork

logger = Logger(service="ledger")


def record_payin(work: OrderWork) -> tuple[str, bool]:
    transaction = journal.payin(work.payment_order_id, work.seller_account, work.amount, settings().psp_name)
    return transaction.transaction_id, journal.record(transaction)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    work = OrderWork.model_validate(event)
    transaction_id, written = record_payin(work)
    logger.info("ledger transaction", extra={"transaction_id": transaction_id, "written_now": written})
    return {"transaction_id": transaction_id, "recorded": True, "written_now": written}
