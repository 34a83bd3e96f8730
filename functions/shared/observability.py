"""Metrics of a function: Powertools' CloudWatch EMF, namespace and service from the function's environment
(POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_SERVICE_NAME: infra/constructs/functions.py)."""

from __future__ import annotations

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider


def service_metrics() -> Metrics:
    """A `Metrics` with a metric set of its own. Plain `Metrics()` instances share one class-level set: handlers
    sharing a process (the local stack, tests) would publish each other's metrics, and one could flush the set
    while another adds to it. On Lambda there is one handler per process, so nothing changes there."""
    return Metrics(provider=AmazonCloudWatchEMFProvider())
