"""Metrics of a function: Powertools' CloudWatch EMF, namespace and service from the function's environment
(POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_SERVICE_NAME: infra/constructs/functions.py).

Two kinds: a handler's own counts (`service_metrics()`, dimension `service`, flushed by `log_metrics`), and the
few with one more low-cardinality dimension (`dimensioned`: a failure's reason, a PSP error's class), each its
own EMF line at once. Never an order, checkout or seller id as a dimension: each value is a metric of its own."""

from __future__ import annotations

import os
import re
import uuid

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

# The payment path's metrics (infra/constructs/dashboard.py charts them, infra/constructs/alarms.py alarms on them).
ORDERS_ACCEPTED = "OrdersAccepted"  # PaymentApi: orders of a new checkout (a replay is not counted again)
ORDERS_SUCCEEDED = "OrdersSucceeded"  # Finalize: orders that became SUCCESS in this call
ORDERS_FAILED = "OrdersFailed"  # Finalize: orders that became FAILED in this call, dimension `reason`
PSP_LATENCY = "PspLatency"  # every HTTP request to the PSP (functions/shared/psp.py), milliseconds
PSP_ERRORS = "PspErrors"  # every PSP answer that is not a 2xx, dimension `error_class`

# A dimension value outside this shape (or too long) is folded into "other": a reason comes from the PSP.
_DIMENSION_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
OTHER = "other"


def service_metrics() -> Metrics:
    """A `Metrics` with a metric set of its own. Plain `Metrics()` instances share one class-level set: handlers
    sharing a process (the local stack, tests) would publish each other's metrics, and one could flush the set
    while another adds to it. On Lambda there is one handler per process, so nothing changes there."""
    return Metrics(provider=AmazonCloudWatchEMFProvider())


def dimension_value(value: str | None) -> str:
    """`value` as a dimension value: itself when short and plain, else "other" (bounded cardinality)."""
    return value if value and _DIMENSION_VALUE.fullmatch(value) else OTHER


def dimensioned(name: str, value: float, unit: MetricUnit = MetricUnit.Count, **dimensions: str) -> None:
    """One metric with `service` and `dimensions` (each bounded by `dimension_value`), published at once. Does
    nothing without a namespace (a script, not a function)."""
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE")
    if not namespace:
        return
    service = os.environ.get("POWERTOOLS_SERVICE_NAME") or "service_undefined"
    with single_metric(name=name, unit=unit, value=value, namespace=namespace,
                       default_dimensions={"service": service}) as metric:
        for key, dimension in dimensions.items():
            metric.add_dimension(name=key, value=dimension_value(dimension))


# One id per checkout, from the API to the notifications (README "Correlation id"): the request's X-Correlation-Id
# when it is one of these, else a new one; stored on the checkout, its orders and charges, and carried from there.
CORRELATION_HEADER = "X-Correlation-Id"
CORRELATION_FIELD = "correlation_id"
_CORRELATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")


def correlation_id_of(value: str | None) -> str:
    """`value` when it is a usable correlation id (8 to 128 of letters, digits and `._:-`), else a new one."""
    return value if value and _CORRELATION_ID.fullmatch(value) else uuid.uuid4().hex


def correlated(item: dict, correlation_id: str | None) -> dict:
    """`item` with the correlation id field when there is one (items stored before it existed have none)."""
    return {**item, CORRELATION_FIELD: correlation_id} if correlation_id else item
