"""SQS consumer: starts the workflow of each charge once. Duplicate deliveries find it started and stop.

The charge moves NOT_STARTED -> EXECUTING with a sweep deadline first, then the workflow starts under the
attempt's deterministic name. If StartExecution fails, the record fails too: SQS delivers it again and the
same-named execution is started (ExecutionAlreadyExists counts as started); if the message is lost for good,
the deadline brings the sweeper. A charge is never EXECUTING without a live execution or a due sweep.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.shared import clock, queues
from functions.shared.config import settings
from functions.shared.models import ChargeWork
from functions.shared.observability import service_metrics
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables

logger = Logger(service="executor")
metrics = service_metrics()
processor = BatchProcessor(event_type=EventType.SQS)


def start_first_attempt(charge_key: str, tables: PaymentTables | None = None) -> bool:
    """Start attempt 1 of the charge; False when there is nothing to start (duplicate delivery, moved on)."""
    tables = tables or PaymentTables.from_settings()
    charge = tables.get_charge(charge_key)
    if charge is None:
        raise LookupError(f"no charge {charge_key}: the message stays for a human (OrdersDlq)")
    status = charge["charge_status"]
    if status == OrderStatus.NOT_STARTED.value:
        now = clock.now()
        due_at = clock.iso(now + timedelta(seconds=settings().executing_deadline_s))
        charge = tables.begin_charge_attempt(charge_key, 1, clock.iso(now), due_at)
        if charge is None:  # a concurrent delivery won: it starts the workflow, or its deadline brings the sweeper
            logger.info("charge started by another delivery", extra={"charge_key": charge_key})
            return False
    elif status != OrderStatus.EXECUTING.value or int(charge.get("attempts", 0)) != 1 or (
            int(charge.get("started_attempt", 0)) >= 1):
        logger.info("charge already started or final; duplicate delivery ignored", extra={"charge_key": charge_key})
        return False
    tables.mark_orders_executing([o["payment_order_id"] for o in charge["orders"]], clock.iso())
    queues.start_workflow(ChargeWork.from_charge_item(charge, attempt=1))
    tables.note_execution_started(charge_key, 1)
    return True


def _record(record: SQSRecord) -> None:
    logger.set_correlation_id(queues.correlation_id_of_message(record.raw_event.get("messageAttributes")) or None)
    if start_first_attempt(json.loads(record.body)["charge_key"]):
        metrics.add_metric(name="WorkflowsStarted", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
