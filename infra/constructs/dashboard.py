"""The on-call dashboard (issue 19): the payment path's business metrics (orders accepted, succeeded, failed by
reason: functions/shared/observability.py), the PSP's latency (p50, p99) and errors by class, the main queues'
ages and the dead-letter queues' depths, throttles, the API's 5xx and p99 latency, and every alarm's state."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import names
from infra.constructs.alarms import Alarms, WatchedQueue

PERIOD = Duration.minutes(5)
_WIDTH, _HEIGHT = 8, 6
# The services that call the PSP (functions/shared/psp.py): their PspLatency and PspErrors.
PSP_SERVICES = (names.EXECUTOR.service, names.REFUND_WORKER.service, names.WEBHOOK_PROCESSOR.service)


def business(metric_name: str, service: str, statistic: str = "Sum", label: str | None = None) -> cloudwatch.Metric:
    return cloudwatch.Metric(namespace=names.METRICS_NAMESPACE, metric_name=metric_name,
                             dimensions_map={"service": service}, period=PERIOD, statistic=statistic,
                             label=label or metric_name)


def by_dimension(metric_name: str, dimension: str, label: str) -> cloudwatch.MathExpression:
    """One line per value of `dimension` (a reason, an error class) of every service: a metric math SEARCH."""
    return cloudwatch.MathExpression(
        expression=f"SEARCH('{{{names.METRICS_NAMESPACE},service,{dimension}}} MetricName=\"{metric_name}\"', "
                   f"'Sum', {int(PERIOD.to_seconds())})",
        using_metrics={}, period=PERIOD, label=label)


class Dashboard(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, functions: dict[str, lambda_.IFunction],
                 main_queues: dict[str, WatchedQueue], dead_letter_queues: dict[str, sqs.IQueue],
                 http_api: apigw.HttpApi, alarms: Alarms) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"{Stack.of(self).stack_name}-ops",
                                              default_interval=Duration.hours(6))
        payment = names.PAYMENT_API.service  # PaymentApi and Finalize publish as "payment"
        self.dashboard.add_widgets(
            graph("Orders accepted, succeeded, failed (5 min)", [
                business("OrdersAccepted", payment, label="accepted"),
                business("OrdersSucceeded", names.FINALIZE.service, label="succeeded")],
                right=[by_dimension("OrdersFailed", "reason", "failed")]),
            graph("PSP latency (ms)", [
                business("PspLatency", service, statistic, f"{service} {statistic}")
                for service in PSP_SERVICES for statistic in ("p50", "p99")]),
            graph("PSP errors by class", [by_dimension("PspErrors", "error_class", "errors")]),
        )
        self.dashboard.add_widgets(
            graph("Main queues: age of the oldest message (s)", [
                watched.queue.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum",
                                                                       label=name)
                for name, watched in main_queues.items()]),
            graph("Dead-letter queues: messages", [
                queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum", label=name)
                for name, queue in dead_letter_queues.items()]),
            graph("Lambda throttles", [fn.metric_throttles(period=PERIOD, statistic="Sum", label=name)
                                       for name, fn in functions.items()]),
        )
        self.dashboard.add_widgets(
            graph("API: requests and 5xx", [http_api.metric_count(period=PERIOD, statistic="Sum", label="requests")],
                  right=[http_api.metric_server_error(period=PERIOD, statistic="Sum", label="5xx")]),
            graph("API latency (ms)", [http_api.metric_latency(period=PERIOD, statistic=s, label=s)
                                       for s in ("p50", "p99")]),
            graph("Lambda errors", [fn.metric_errors(period=PERIOD, statistic="Sum", label=name)
                                    for name, fn in functions.items()]),
        )
        self.dashboard.add_widgets(cloudwatch.AlarmStatusWidget(
            title="Alarms (runbook: ops/README.md)", alarms=list(alarms.alarms.values()), width=24,
            height=_HEIGHT))


def graph(title: str, left: list[cloudwatch.IMetric], right: list[cloudwatch.IMetric] | None = None
          ) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=left, right=right or [], width=_WIDTH, height=_HEIGHT,
                                  legend_position=cloudwatch.LegendPosition.BOTTOM)
