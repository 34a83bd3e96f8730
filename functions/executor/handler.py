"""Workflow task: one PSP charge per order, idempotency key = payment_order_id.

Transient PSP errors raise PspTransientError, which the workflow retries with backoff (same key, so a charge
whose answer was lost is replayed, never repeated). Declines come back as a `failed` outcome.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.shared import psp
from functions.shared.models import OrderWork

logger = Logger(service="executor")


def execute(work: OrderWork) -> psp.ChargeResult:
    if work.psp_reference:
        # A re-drive of an order the PSP already knows: its current state, not the replay of the first answer.
        return psp.client().retrieve(work.psp_reference)
    return psp.client().charge(work)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    work = OrderWork.model_validate(event)
    logger.append_keys(payment_order_id=work.payment_order_id, attempt=work.attempt)
    result = execute(work)
    logger.info("charge outcome", extra={"outcome": result.outcome, "psp_status": result.psp_status,
                                         "failure_code": result.failure_code})
    return result.as_dict()
