"""CloudWatch alarms for on-call, all to one SNS topic, each named `<stack>-<id>` with a runbook entry of that id
in ops/README.md ("Alarms", tests/infra/test_observability.py holds them to it).

Rates and ages, not `Errors > 0` on every function (issue 19): each function's error rate and throttle rate over
5 minutes, each main queue's oldest message, anything in a dead-letter queue, the API's 5xx rate and p99 latency;
and the business alarms: failed or timed-out workflows, differences waiting for review, internal reconciliation's
unexplained findings, the refund path's (infra/constructs/refunds.py)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra import names

_PERIOD = Duration.minutes(1)
RATE_PERIOD = Duration.minutes(5)
ERROR_RATE_PCT = 5  # of a function's invocations over 5 min
THROTTLE_RATE_PCT = 10  # of a function's invocation attempts over 5 min (the governor throttles a little)
API_5XX_RATE_PCT = 1
API_P99_LATENCY_MS = 2000  # over two 5-minute periods in a row
_ABOVE = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD


@dataclass(frozen=True)
class WatchedQueue:
    """A main queue and the age of its oldest message (seconds) past which its consumer is stuck or behind."""

    queue: sqs.IQueue
    max_age_s: int


class Alarms(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, names.ALARM_TOPIC, display_name="MarketPay alarms", enforce_ssl=True)
        self._action = actions.SnsAction(self.topic)
        self.alarms: dict[str, cloudwatch.Alarm] = {}

    # --- business -----------------------------------------------------------------------------------------

    def workflow(self, state_machine: sfn.StateMachine, review_queue: sqs.IQueue) -> None:
        self.any(
            "ReviewQueueNotEmpty",
            review_queue.metric_approximate_number_of_messages_visible(period=_PERIOD, statistic="Maximum"),
            "Reconciliation found differences it cannot explain",
        )
        self.any(
            "WorkflowExecutionsFailed",
            state_machine.metric_failed(period=_PERIOD, statistic="Sum"),
            "Payment workflow executions failed (orders go to the sweeper or WorkflowDlq)",
        )
        self.any(
            "WorkflowExecutionsTimedOut",
            state_machine.metric_timed_out(period=_PERIOD, statistic="Sum"),
            "Payment workflow executions hit the Express time limit",
        )

    def internal_recon(self) -> None:
        """Internal reconciliation (infra/constructs/internal_recon.py): anything it could not fix (it runs once a
        night: the period is a day, so the alarm stays up until the next run). Its errors: its error rate."""
        self.any(
            "InternalReconUnexplained",
            cloudwatch.Metric(namespace=names.METRICS_NAMESPACE, metric_name=names.UNEXPLAINED_FINDINGS_METRIC,
                              dimensions_map={"service": names.INTERNAL_RECON.service}, period=Duration.days(1),
                              statistic="Maximum"),
            "Internal reconciliation found disagreements it could not fix: read its report in reports/internal/",
        )

    # --- technical: rates and ages --------------------------------------------------------------------------

    def rates_and_ages(self, *, functions: dict[str, lambda_.IFunction], main_queues: dict[str, WatchedQueue],
                       dead_letter_queues: dict[str, sqs.IQueue], http_api: apigw.HttpApi) -> None:
        for name, fn in functions.items():
            self.add(f"{name}ErrorRate", percent("errors", fn.metric_errors(period=RATE_PERIOD, statistic="Sum"),
                                                 fn.metric_invocations(period=RATE_PERIOD, statistic="Sum")),
                     ERROR_RATE_PCT, f"{name}: more than {ERROR_RATE_PCT} % of its invocations failed over 5 min")
            throttles = fn.metric_throttles(period=RATE_PERIOD, statistic="Sum")
            attempts = cloudwatch.MathExpression(
                expression="FILL(invocations, 0) + FILL(throttles, 0)", period=RATE_PERIOD, label="attempts",
                using_metrics={"invocations": fn.metric_invocations(period=RATE_PERIOD, statistic="Sum"),
                               "throttles": throttles})
            self.add(f"{name}ThrottleRate", percent("throttled", throttles, attempts), THROTTLE_RATE_PCT,
                     f"{name}: more than {THROTTLE_RATE_PCT} % of its invocations throttled over 5 min")
        for name, watched in main_queues.items():
            self.add(f"{name}Age", watched.queue.metric_approximate_age_of_oldest_message(
                period=_PERIOD, statistic="Maximum"), watched.max_age_s,
                f"The oldest message of {name} is older than {watched.max_age_s} s: its consumer is stuck or behind",
                evaluation_periods=5, datapoints=3)
        for name, queue in dead_letter_queues.items():
            self.any(f"{name}NotEmpty",
                     queue.metric_approximate_number_of_messages_visible(period=_PERIOD, statistic="Maximum"),
                     f"Messages in {name}: look at them, fix the cause, redrive (ops/README.md)")
        self.add("Api5xxRate", percent("server_errors", http_api.metric_server_error(period=RATE_PERIOD,
                                                                                     statistic="Sum"),
                                       http_api.metric_count(period=RATE_PERIOD, statistic="Sum")),
                 API_5XX_RATE_PCT, f"More than {API_5XX_RATE_PCT} % of the API's requests answered 5xx over 5 min")
        self.add("ApiLatencyP99", http_api.metric_latency(period=RATE_PERIOD, statistic="p99"), API_P99_LATENCY_MS,
                 f"The API's p99 latency is above {API_P99_LATENCY_MS} ms for 10 min", evaluation_periods=2)

    # --- building blocks ------------------------------------------------------------------------------------

    def any(self, alarm_id: str, metric: cloudwatch.IMetric, description: str) -> cloudwatch.Alarm:
        """Alarm as soon as the metric is above zero for one period; no data means nothing happened."""
        return self.add(alarm_id, metric, 0, description)

    def add(self, alarm_id: str, metric: cloudwatch.IMetric, threshold: float, description: str, *,
            evaluation_periods: int = 1, datapoints: int | None = None) -> cloudwatch.Alarm:
        """An alarm above `threshold`, named `<stack>-<alarm_id>`; its runbook entry is `alarm_id` in
        ops/README.md. No data is not breaching: an idle system is a healthy one."""
        alarm = metric.create_alarm(
            self,
            alarm_id,
            alarm_name=f"{Stack.of(self).stack_name}-{alarm_id}",
            alarm_description=f"{description}. Runbook: ops/README.md, alarm {alarm_id}",
            threshold=threshold,
            comparison_operator=_ABOVE,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms[alarm_id] = alarm
        return alarm


def percent(label: str, part: cloudwatch.IMetric, whole: cloudwatch.IMetric) -> cloudwatch.MathExpression:
    """100 * part / whole over the period, 0 when nothing happened (metric math)."""
    return cloudwatch.MathExpression(
        expression="IF(FILL(whole, 0) > 0, 100 * FILL(part, 0) / whole, 0)",
        using_metrics={"part": part, "whole": whole}, period=RATE_PERIOD, label=f"{label} %")
