"""Internal recon Lambda (issue 19): run nightly by an EventBridge schedule (and by `ops recon internal`).

The event may carry {"fix": false} for a read-only run; the schedule fixes what is safely fixable. Publishes
UnexplainedFindings (the alarm) and FixedFindings.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.recon import internal
from functions.shared.observability import service_metrics

logger = Logger(service="recon-internal")
metrics = service_metrics()

UNEXPLAINED_FINDINGS = "UnexplainedFindings"  # infra names.UNEXPLAINED_FINDINGS_METRIC: the alarm


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event = event or {}
    settle = timedelta(seconds=int(event["settle_s"])) if "settle_s" in event else None  # on demand only
    report, keys = internal.run(fix=bool(event.get("fix", True)), settle=settle)
    summary = report.summary()
    metrics.add_metric(name=UNEXPLAINED_FINDINGS, unit=MetricUnit.Count, value=summary["unexplained"])
    metrics.add_metric(name="FixedFindings", unit=MetricUnit.Count, value=summary["fixed"])
    logger.info("internal recon", extra={"total": summary["total"], "fixed": summary["fixed"],
                                         "unexplained": summary["unexplained"], "reports": keys,
                                         "categories": {name: values["count"] for name, values
                                                        in summary["categories"].items() if values["count"]}})
    return {**summary, "reports": keys}
