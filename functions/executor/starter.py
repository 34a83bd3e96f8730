"""SQS consumer: starts one workflow per order, once. Duplicate deliveries lose the status race and stop."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.shared import clock, queues
from functions.shared.config import settings
from functions.shared.models import OrderWork
from functions.shared.tables import PaymentTables

logger = Logger(service="executor")
processor = BatchProcessor(event_type=EventType.SQS)


def start_first_attempt(work: OrderWork, tables: PaymentTables | None = None) -> bool:
    """NOT_STARTED -> EXECUTING, then start the workflow. False when another delivery got there first.

    If the function dies between the two calls, the order is EXECUTING with no workflow: the sweeper starts
    the next attempt when the deadline passes (the steps are idempotent, so nothing happens twice).
    """
    tables = tables or PaymentTables.from_settings()
    now = clock.now()
    due_at = clock.iso(now + timedelta(seconds=settings().executing_deadline_s))
    started = tables.begin_attempt(work.payment_order_id, 1, clock.iso(now), due_at)
    if started is None:
        logger.info("order already started or final; duplicate delivery ignored",
                    extra={"payment_order_id": work.payment_order_id})
        return False
    queues.start_workflow(work.model_copy(update={"attempt": 1, "first_attempt_at": started["first_attempt_at"]}))
    return True


def _record(record: SQSRecord) -> None:
    start_first_attempt(OrderWork.model_validate_json(record.body))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
