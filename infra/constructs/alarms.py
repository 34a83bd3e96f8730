"""CloudWatch alarms for on-call, all to one SNS topic: anything in a DLQ, failed or timed-out workflows,
differences waiting for review, and Lambda errors of each function."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra import names

_PERIOD = Duration.minutes(1)


class Alarms(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        dead_letter_queues: dict[str, sqs.IQueue],
        review_queue: sqs.IQueue,
        state_machine: sfn.StateMachine,
        functions: dict[str, lambda_.IFunction],
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, names.ALARM_TOPIC, display_name="MarketPay alarms", enforce_ssl=True)
        self._action = actions.SnsAction(self.topic)
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        for name, queue in dead_letter_queues.items():
            self._any(
                f"{name}NotEmpty",
                queue.metric_approximate_number_of_messages_visible(period=_PERIOD, statistic="Maximum"),
                f"Messages in {name}: look at them, fix the cause, redrive (ops/)",
            )
        self._any(
            "ReviewQueueNotEmpty",
            review_queue.metric_approximate_number_of_messages_visible(period=_PERIOD, statistic="Maximum"),
            "Reconciliation found differences it cannot explain",
        )
        self._any(
            "WorkflowExecutionsFailed",
            state_machine.metric_failed(period=_PERIOD, statistic="Sum"),
            "Payment workflow executions failed (orders go to the sweeper or WorkflowDlq)",
        )
        self._any(
            "WorkflowExecutionsTimedOut",
            state_machine.metric_timed_out(period=_PERIOD, statistic="Sum"),
            "Payment workflow executions hit the Express time limit",
        )
        for name, fn in functions.items():
            self._any(f"{name}Errors", fn.metric_errors(period=_PERIOD, statistic="Sum"), f"{name} raised errors")

    def internal_recon(self, fn: lambda_.IFunction) -> None:
        """Internal reconciliation (infra/constructs/internal_recon.py): anything it could not fix, and its errors
        (it runs once a night: the period is a day, so the alarm stays up until the next run)."""
        self._any(
            "InternalReconUnexplained",
            cloudwatch.Metric(namespace=names.METRICS_NAMESPACE, metric_name=names.UNEXPLAINED_FINDINGS_METRIC,
                              dimensions_map={"service": names.INTERNAL_RECON.service}, period=Duration.days(1),
                              statistic="Maximum"),
            "Internal reconciliation found disagreements it could not fix: read its report in reports/internal/",
        )
        self._any(f"{names.INTERNAL_RECON.name}Errors", fn.metric_errors(period=_PERIOD, statistic="Sum"),
                  f"{names.INTERNAL_RECON.name} raised errors")

    def _any(self, alarm_id: str, metric: cloudwatch.Metric, description: str) -> None:
        """Alarm as soon as the metric is above zero for one period; no data means nothing happened."""
        alarm = metric.create_alarm(
            self,
            alarm_id,
            alarm_description=description,
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms[alarm_id] = alarm
