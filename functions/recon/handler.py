"""Recon Lambda: SQS ReconQueue of S3 notifications on `incoming/<psp>/` (batch size 1, partial failures).

A record that raises is reported as failed: SQS retries it, and after maxReceiveCount it goes to the DLQ.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.recon.service import INCOMING, RunResult, RunStatus, SettlementObject, reconcile
from functions.shared.money import Money
from functions.shared.observability import service_metrics

logger = Logger()
metrics = service_metrics()
processor = BatchProcessor(event_type=EventType.SQS)

# Metric names (namespace from POWERTOOLS_METRICS_NAMESPACE). QuarantinedFiles > 0 is the alarm.
QUARANTINED_FILES = "QuarantinedFiles"


def objects_of(notification: S3Event) -> list[SettlementObject]:
    """The settlement files an S3 notification names (none for the s3:TestEvent S3 sends on setup: no Records)."""
    if "Records" not in notification:
        return []
    found = []
    for record in notification.records:
        if not record.event_name.startswith("ObjectCreated"):
            continue
        obj = record.s3.get_object
        key = unquote_plus(obj.key)
        if not key.startswith(INCOMING) or key.endswith("/"):
            logger.warning("ignoring an object outside incoming/<psp>/", extra={"key": key})
            continue
        delivery = obj.get("sequencer") or record.get("eventTime") or obj.etag
        size = obj.get("size")
        found.append(SettlementObject(record.s3.bucket.name, key, f"{key}@{delivery}",
                                      int(size) if size is not None else None))
    return found


def _publish(result: RunResult) -> None:
    logger.info("settlement file handled", extra={"status": result.status, "key": result.key,
                                                   "sha256": result.sha256, "detail": result.detail})
    if result.status is RunStatus.QUARANTINED:
        metrics.add_metric(name=QUARANTINED_FILES, unit=MetricUnit.Count, value=1)
    if result.status is RunStatus.DUPLICATE:
        metrics.add_metric(name="DuplicateFiles", unit=MetricUnit.Count, value=1)
    if result.status in (RunStatus.ALREADY_DONE, RunStatus.GONE):
        metrics.add_metric(name="RedeliveredNotifications", unit=MetricUnit.Count, value=1)
    if result.status is not RunStatus.PROCESSED:
        return
    summary = result.summary
    categories = summary["categories"]
    metrics.add_metric(name="Rows", unit=MetricUnit.Count, value=summary["total"])
    metrics.add_metric(name="Matched", unit=MetricUnit.Count, value=categories["matched"]["count"])
    metrics.add_metric(name="Unexplained", unit=MetricUnit.Count, value=summary["unexplained"])
    metrics.add_metric(name="AutoFixed", unit=MetricUnit.Count, value=summary["fixed"])
    for category, values in categories.items():
        if values["count"]:
            metrics.add_metric(name=f"Rows_{category}", unit=MetricUnit.Count, value=values["count"])
        for currency, amount in values["amounts"].items():
            # Amounts per category and currency, in minor units (a metric has no currency of its own).
            metrics.add_metric(name=f"AmountMinor_{category}_{currency}", unit=MetricUnit.Count,
                               value=Money.from_decimal(amount, currency).minor)
    logger.info("reconciliation summary", extra={"summary": summary})


def record_handler(record: SQSRecord) -> None:
    for obj in objects_of(record.decoded_nested_s3_event):
        logger.append_keys(psp=obj.psp, key=obj.key)
        _publish(reconcile(obj))


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
