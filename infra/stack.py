"""The MarketPay stack: wires the capability constructs together and publishes the outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from constructs import Construct

from infra import names
from infra.constructs.alarms import Alarms, WatchedQueue
from infra.constructs.api import Api
from infra.constructs.dashboard import Dashboard
from infra.constructs.disputes import Disputes
from infra.constructs.functions import Functions
from infra.constructs.internal_recon import InternalRecon
from infra.constructs.notifications import Notifications
from infra.constructs.queues import Queues
from infra.constructs.refunds import Refunds
from infra.constructs.settlement import Settlement
from infra.constructs.tables import Tables
from infra.constructs.webhooks import Webhooks
from infra.constructs.workflow import Workflow
from infra.psp_context import PspSettings


@dataclass(frozen=True)
class StackSettings:
    repo_root: Path
    layer_dir: Path
    psp_key_parameter: str = names.DEFAULT_PSP_KEY_PARAMETER
    destroy_on_removal: bool = False  # dev only: tables, bucket and logs go with the stack
    webhook_secret_parameter: str = names.DEFAULT_WEBHOOK_SECRET_PARAMETER
    psp: PspSettings = PspSettings()  # routing and Adyen (infra/psp_context.py): defaults route nothing to Adyen


class MarketPayStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, settings: StackSettings, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal = RemovalPolicy.DESTROY if settings.destroy_on_removal else RemovalPolicy.RETAIN
        # W3005: CDK makes each function (and the state machine) DependsOn its role although the GetAtt of the
        # role already orders them; harmless, and not ours to change. Every other cfn-lint rule stays on.
        self.template_options.metadata = {"cfn-lint": {"config": {"ignore_checks": ["W3005"]}}}

        tables = Tables(self, names.TABLES, removal_policy=removal)
        queues = Queues(self, names.QUEUES)
        settlement = Settlement(self, names.SETTLEMENT, recon_queue=queues.recon, removal_policy=removal)
        functions = Functions(
            self,
            names.FUNCTIONS,
            tables=tables,
            queues=queues,
            bucket=settlement.bucket,
            repo_root=settings.repo_root,
            layer_dir=settings.layer_dir,
            psp_key_parameter=settings.psp_key_parameter,
            psp=settings.psp,
            removal_policy=removal,
        )
        workflow = Workflow(
            self,
            names.WORKFLOW,
            executor=functions.executor,
            wallet=functions.wallet,
            ledger=functions.ledger,
            finalize=functions.finalize,
            workflow_dlq=queues.workflow_dlq,
            removal_policy=removal,
        )
        functions.wire_state_machine(workflow.state_machine)
        api = Api(self, names.API, functions=functions, removal_policy=removal)
        webhooks = Webhooks(self, names.WEBHOOKS, tables=tables, queues=queues, functions=functions,
                            http_api=api.http_api, secret_parameter=settings.webhook_secret_parameter,
                            removal_policy=removal, psp=settings.psp)
        disputes = Disputes(self, names.DISPUTES_CONSTRUCT, functions=functions, processor=webhooks.processor,
                            removal_policy=removal)
        # Status changes of these tables are delivered to the storefront (a new table: one more entry).
        notifications = Notifications(self, names.NOTIFICATIONS, functions=functions, removal_policy=removal,
                                      streamed={names.PAYMENT_ORDERS: tables.payment_orders,
                                                names.PAYOUTS: tables.payouts,
                                                names.DISPUTES: disputes.table})
        notifications.notifier.add_environment(names.ENV_DISPUTES_TABLE, disputes.table.table_name)
        # an order's payload is the API's view, which lists the order's disputes
        functions.allow(notifications.notifier, ["dynamodb:BatchGetItem"], [disputes.table.table_arn])
        alarms = Alarms(self, names.ALARMS)
        alarms.workflow(workflow.state_machine, queues.review)

        refunds = Refunds(self, names.REFUNDS_CONSTRUCT, functions=functions, alarms=alarms,
                          psp_key_parameter=settings.psp_key_parameter, removal_policy=removal, psp=settings.psp)
        CfnOutput(self, names.OUT_REFUNDS_TABLE, value=refunds.table.table_name)
        CfnOutput(self, names.OUT_REFUNDS_QUEUE, value=refunds.queue.queue_url)
        CfnOutput(self, names.OUT_REFUNDS_DLQ, value=refunds.dlq.queue_url)
        # Refund events from Stripe finish refunds (apply_psp_refund); refund statuses reach the storefront.
        refunds.grant_refund_path(webhooks.processor, functions=functions,
                                  psp_key_parameter=settings.psp_key_parameter)
        refunds.stream_to(notifications)
        InternalRecon(self, names.INTERNAL_RECON_CONSTRUCT, functions=functions, bucket=settlement.bucket,
                      refunds_table=refunds.table, alarms=alarms)
        # Every function, queue and dead-letter queue exists now: their rates and ages, and the dashboard.
        all_functions = {**functions.all, names.REFUND_WORKER.name: refunds.worker}
        main_queues = {
            names.ORDERS_QUEUE: WatchedQueue(queues.orders, 300),  # the starter takes each within seconds
            names.PAYOUTS_QUEUE: WatchedQueue(queues.payouts, 1800),  # a short balance waits up to 15 min
            names.RECON_QUEUE: WatchedQueue(queues.recon, 3600),  # one settlement file: up to 15 min
            names.WEBHOOK_QUEUE: WatchedQueue(webhooks.queue, 300),
            names.REFUNDS_QUEUE: WatchedQueue(refunds.queue, 3600),  # polls and waits are sent 15 min ahead
            # deliveries are retried for 3 days: 6 h means the storefront's endpoint has been failing that long
            names.NOTIFICATIONS_QUEUE: WatchedQueue(notifications.queue, 6 * 3600),
        }
        dead_letter_queues = {**queues.dead_letter_queues(), **webhooks.dead_letter_queues(),
                              **notifications.dead_letter_queues(), names.REFUNDS_DLQ: refunds.dlq}
        alarms.rates_and_ages(functions=all_functions, main_queues=main_queues,
                              dead_letter_queues=dead_letter_queues, http_api=api.http_api)
        Dashboard(self, names.DASHBOARD, functions=all_functions, main_queues=main_queues,
                  dead_letter_queues=dead_letter_queues, http_api=api.http_api, alarms=alarms)

        CfnOutput(self, names.OUT_DISPUTES_TABLE, value=disputes.table.table_name)
        CfnOutput(self, names.OUT_API_URL, value=api.url)
        CfnOutput(self, names.OUT_API_KEYS_TABLE, value=api.keys_table.table_name)
        CfnOutput(self, names.OUT_SETTLEMENT_BUCKET, value=settlement.bucket.bucket_name)
        CfnOutput(self, names.OUT_STATE_MACHINE_ARN, value=workflow.state_machine.state_machine_arn)
        CfnOutput(self, names.OUT_ALARM_TOPIC_ARN, value=alarms.topic.topic_arn)
        for queue_name, queue in queues.by_name().items():
            CfnOutput(self, names.OUT_QUEUE_URLS[queue_name], value=queue.queue_url)
        for table_name, table in tables.by_name().items():
            CfnOutput(self, names.OUT_TABLE_NAMES[table_name], value=table.table_name)
        CfnOutput(self, names.OUT_WEBHOOK_QUEUE_URL, value=webhooks.queue.queue_url)
        CfnOutput(self, names.OUT_WEBHOOK_DLQ_URL, value=webhooks.dlq.queue_url)
        CfnOutput(self, names.OUT_WEBHOOK_EVENTS_TABLE, value=webhooks.events_table.table_name)
        for queue_name, queue in notifications.queues_by_name().items():
            CfnOutput(self, names.OUT_NOTIFICATION_QUEUE_URLS[queue_name], value=queue.queue_url)
        CfnOutput(self, names.OUT_NOTIFICATION_ENDPOINTS_TABLE, value=notifications.endpoints.table_name)
