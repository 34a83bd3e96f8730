"""The names only the stack needs: logical ids, handlers, outputs, workflow states.

Construct ids of the stack's direct children become CloudFormation logical ids (outputs keep them verbatim);
names fixed by docs/design.md are spelled here once. The names the running code reads too (environment
variables, indexes, bucket prefixes) live in functions/shared/names.py and are imported from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from functions.shared.names import (  # noqa: F401 - the runtime names, re-exported for the stack's constructs
    AWAITING_INDEX,
    CREATED_INDEX,
    ENV_CHARGES_TABLE,
    ENV_LEDGER_TABLE,
    ENV_LOG_LEVEL,
    ENV_METRICS_NAMESPACE,
    ENV_ORDERS_QUEUE_URL,
    ENV_PAYMENT_EVENTS_TABLE,
    ENV_PAYMENT_ORDERS_TABLE,
    ENV_PAYOUTS_DLQ_URL,
    ENV_PAYOUTS_QUEUE_URL,
    ENV_PAYOUTS_TABLE,
    ENV_PSP_API_BASE,
    ENV_PSP_API_KEY_PARAMETER,
    ENV_PSP_HEALTH_TABLE,
    ENV_RECON_TABLE,
    ENV_REVIEW_QUEUE_URL,
    ENV_SELLERS_TABLE,
    ENV_SERVICE_NAME,
    ENV_SETTLEMENT_BUCKET,
    ENV_STATE_MACHINE_ARN,
    ENV_WALLET_TABLE,
    ENV_WORKFLOW_DLQ_URL,
    INCOMING_PREFIX,
    INTERNAL_REPORTS_PREFIX,
    LEDGER_ORDER_INDEX,
    QUARANTINE_PREFIX,
    RECEIPTS_INDEX,
    REFERENCE_INDEX,
    REPORTS_PREFIX,
    SWEEP_INDEX,
    TRANSFERRED_INDEX,
    WALLET_STATEMENT_INDEX,
)

STACK_NAME = "MarketPay"
DEFAULT_REGION = "us-east-1"
METRICS_NAMESPACE = "MarketPay"
LOG_LEVEL = "INFO"  # every function's off the order's path; the local stack's callers may lower it (extra_env)
# On the order's path (FunctionSpec.hot_path): warnings and errors always, and every line (DEBUG) in 1 invocation
# of 100, decided per invocation by Powertools (POWERTOOLS_LOGGER_SAMPLE_RATE). Metrics (EMF) do not depend on it.
# INFO everywhere was 750 log bytes an invocation, $2.14 per million orders (docs/decisions.md 2026-12-06).
HOT_PATH_LOG_LEVEL = "WARNING"
HOT_PATH_LOG_SAMPLE_RATE = "0.01"
ENV_LOG_SAMPLE_RATE = "POWERTOOLS_LOGGER_SAMPLE_RATE"

# Context keys (`cdk synth -c key=value`, or CDK_CONTEXT_JSON for `python infra/app.py`) and their defaults.
CTX_DESTROY = "destroy"  # "true": tables, bucket and log groups are deleted with the stack (dev only)
CTX_PSP_KEY_PARAMETER = "psp_api_key_parameter"
CTX_LAYER_DIR = "layer_dir"
ENV_LAYER_DIR = "MARKETPAY_LAYER_DIR"  # same as CTX_LAYER_DIR, for tests and CI
DEFAULT_PSP_KEY_PARAMETER = "/marketpay/stripe/secret-key"
DEFAULT_LAYER_DIR = "build/layer"
# Routing and Adyen (infra/psp_context.py; docs/decisions.md 2026-12-07): which PSP charges what, and Adyen's account.
# The defaults change nothing: no rule, so every charge goes to Stripe and no function reads an Adyen setting.
CTX_PSP_ROUTING = "psp_routing"  # PSP_ROUTING's JSON (functions/shared/routing.py); "" = no rule
CTX_ADYEN_KEY_PARAMETER = "adyen_api_key_parameter"
CTX_ADYEN_MERCHANT_ACCOUNT = "adyen_merchant_account"
CTX_ADYEN_ENVIRONMENT = "adyen_environment"  # test | live
CTX_ADYEN_LIVE_PREFIX = "adyen_live_prefix"  # live only: the company account's live URL prefix
DEFAULT_ADYEN_KEY_PARAMETER = "/marketpay/adyen/api-key"
CTX_ADYEN_HMAC_KEY_PARAMETER = "adyen_hmac_key_parameter"  # the notifications' HMAC key (hex), an SSM SecureString
DEFAULT_ADYEN_HMAC_KEY_PARAMETER = "/marketpay/adyen/hmac-key"
DEFAULT_ADYEN_ENVIRONMENT = "test"
# Read by functions/shared/config.py under their field names (PSP_ROUTING, ADYEN_*): spelled here for the stack.
ENV_PSP_ROUTING = "PSP_ROUTING"
ENV_ADYEN_KEY_PARAMETER = "ADYEN_API_KEY_PARAMETER"
ENV_ADYEN_MERCHANT_ACCOUNT = "ADYEN_MERCHANT_ACCOUNT"
ENV_ADYEN_ENVIRONMENT = "ADYEN_ENVIRONMENT"
ENV_ADYEN_LIVE_PREFIX = "ADYEN_LIVE_PREFIX"
ENV_ADYEN_HMAC_KEY_PARAMETER = "ADYEN_HMAC_KEY_PARAMETER"
ENV_ADYEN_CHECKOUT_BASE = "ADYEN_CHECKOUT_BASE"  # "" deployed (the environment's URL); the sandbox's locally

# Capability constructs (children of the stack).
TABLES = "Tables"
QUEUES = "Queues"
FUNCTIONS = "Functions"
WORKFLOW = "Workflow"
API = "Api"
SETTLEMENT = "Settlement"
ALARMS = "Alarms"
DASHBOARD = "Dashboard"
SCHEDULE = "SweepSchedule"

# Tables (docs/design.md "Tables").
PAYMENT_EVENTS = "PaymentEvents"
PAYMENT_ORDERS = "PaymentOrders"
WALLET = "Wallet"
LEDGER = "Ledger"
RECON = "Recon"
CHARGES = "Charges"
SELLERS = "Sellers"
PAYOUTS = "Payouts"
PSP_HEALTH = "PspHealth"

# Queues (docs/design.md "Queues"); each main queue's DLQ is "<name without Queue>Dlq".
ORDERS_QUEUE = "OrdersQueue"
ORDERS_DLQ = "OrdersDlq"
WORKFLOW_DLQ = "WorkflowDlq"
RECON_QUEUE = "ReconQueue"
RECON_DLQ = "ReconDlq"
REVIEW_QUEUE = "ReviewQueue"
REVIEW_DLQ = "ReviewDlq"
PAYOUTS_QUEUE = "PayoutsQueue"
PAYOUTS_DLQ = "PayoutsDlq"
MAX_RECEIVE_COUNT = 5

# Buckets.
SETTLEMENT_BUCKET = "SettlementBucket"
ACCESS_LOG_BUCKET = "SettlementAccessLogs"

# Workflow state names (docs/design.md "Workflow").
STATE_MACHINE = "PaymentOrderWorkflow"
CHARGE = "Charge"
CHARGE_OUTCOME = "ChargeOutcome"
CREDIT_WALLET = "CreditWallet"
RECORD_LEDGER = "RecordLedger"
MARK_SUCCEEDED = "MarkSucceeded"
MARK_FAILED = "MarkFailed"
MARK_PENDING = "MarkPending"
TO_DEAD_LETTER = "ToDeadLetter"
CHARGE_THROTTLED = "ChargeThrottled"
CHARGE_PARKED = "ChargeParked"  # the PSP's breaker is open: nothing sent, the sweeper drives it when it may go
LAMBDA_THROTTLED = "Lambda.TooManyRequestsException"
FAILED = "Failed"
# Error names matched by class name (functions/shared/errors.py).
PSP_TRANSIENT_ERROR = "PspTransientError"
AWS_TRANSIENT_ERROR = "AwsTransientError"
PSP_PERMANENT_ERROR = "PspPermanentError"

HTTP_API = "HttpApi"
ALARM_TOPIC = "AlarmTopic"


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function of design.md: construct id, handler string, timeout and memory."""

    name: str
    handler: str
    service: str
    timeout_s: int
    memory_mb: int = 256
    hot_path: bool = False  # runs for every order: logs at HOT_PATH_LOG_LEVEL with sampling


def log_env(spec: FunctionSpec) -> dict[str, str]:
    """The function's log level and sample rate (explicit everywhere: every function's Logger reads both)."""
    if spec.hot_path:
        return {ENV_LOG_LEVEL: HOT_PATH_LOG_LEVEL, ENV_LOG_SAMPLE_RATE: HOT_PATH_LOG_SAMPLE_RATE}
    return {ENV_LOG_LEVEL: LOG_LEVEL, ENV_LOG_SAMPLE_RATE: "0"}


PAYMENT_API = FunctionSpec("PaymentApi", "functions.payment.api.handler", "payment", 10, hot_path=True)
ORDER_STARTER = FunctionSpec("OrderStarter", "functions.executor.starter.handler", "executor", 30, hot_path=True)
# The workflow's tasks: timeouts sized so the worst case of every path fits Express's 300 s (docs/decisions.md,
# tests/infra/test_workflow_budget.py). Executor: at most two PSP calls of PSP_TIMEOUT_S (8 s) each.
EXECUTOR = FunctionSpec("Executor", "functions.executor.handler.handler", "executor", 20, hot_path=True)
WALLET_FN = FunctionSpec("Wallet", "functions.wallet.handler.handler", "wallet", 8, hot_path=True)
LEDGER_FN = FunctionSpec("Ledger", "functions.ledger.handler.handler", "ledger", 8, hot_path=True)
FINALIZE = FunctionSpec("Finalize", "functions.payment.finalize.handler", "payment", 8, hot_path=True)
SWEEPER = FunctionSpec("Sweeper", "functions.executor.sweeper.handler", "executor", 60)
RECON_FN = FunctionSpec("Recon", "functions.recon.handler.handler", "recon", 900, 1769)
# Releases and transfers one pay-out per message: at most two PSP calls (look-up, create) of PSP_TIMEOUT_S.
TRANSFER = FunctionSpec("Transfer", "functions.executor.transfer.handler", "executor", 30)
ALL_FUNCTIONS = (PAYMENT_API, ORDER_STARTER, EXECUTOR, WALLET_FN, LEDGER_FN, FINALIZE, SWEEPER, RECON_FN, TRANSFER)

# Stack outputs.
OUT_API_URL = "ApiUrl"
OUT_SETTLEMENT_BUCKET = "SettlementBucketName"
OUT_STATE_MACHINE_ARN = "StateMachineArn"
OUT_ALARM_TOPIC_ARN = "AlarmTopicArn"
OUT_QUEUE_URLS = {  # queue construct name -> output name
    ORDERS_QUEUE: "OrdersQueueUrl",
    ORDERS_DLQ: "OrdersDlqUrl",
    WORKFLOW_DLQ: "WorkflowDlqUrl",
    RECON_QUEUE: "ReconQueueUrl",
    RECON_DLQ: "ReconDlqUrl",
    REVIEW_QUEUE: "ReviewQueueUrl",
    REVIEW_DLQ: "ReviewDlqUrl",
    PAYOUTS_QUEUE: "PayoutsQueueUrl",
    PAYOUTS_DLQ: "PayoutsDlqUrl",
}
OUT_TABLE_NAMES = {  # table construct name -> output name
    PAYMENT_EVENTS: "PaymentEventsTableName",
    PAYMENT_ORDERS: "PaymentOrdersTableName",
    WALLET: "WalletTableName",
    LEDGER: "LedgerTableName",
    RECON: "ReconTableName",
    CHARGES: "ChargesTableName",
    SELLERS: "SellersTableName",
    PAYOUTS: "PayoutsTableName",
    PSP_HEALTH: "PspHealthTableName",
}

# HTTP routes, all to PaymentApi.
ROUTES = (
    ("POST", "/v1/payments"),
    ("POST", "/v1/payment_routes"),
    ("GET", "/v1/payments/{payment_order_id}"),
    ("GET", "/v1/checkouts/{checkout_id}"),
    ("POST", "/v1/checkouts/{checkout_id}/payment_details"),
    ("POST", "/v1/payments/{payment_order_id}/release"),
    ("PUT", "/v1/sellers/{seller_account}"),
    ("GET", "/v1/sellers/{seller_account}"),
    ("GET", "/v1/sellers/{seller_account}/balance"),
    ("GET", "/v1/sellers/{seller_account}/statement"),
    ("GET", "/v1/openapi.json"),
)

# Webhooks in (infra/constructs/webhooks.py; docs/decisions.md 2026-12-05).
from functions.shared.names import (  # noqa: E402, F401 - the runtime names of the webhooks
    ADYEN_WEBHOOK_PATH,
    ENV_WEBHOOK_EVENTS_TABLE,
    ENV_WEBHOOK_QUEUE_URL,
    ENV_WEBHOOK_SECRET_PARAMETER,
    SELLER_ACCOUNT_INDEX,
    WEBHOOK_PATH,
)

WEBHOOKS = "Webhooks"
WEBHOOK_EVENTS = "WebhookEvents"
WEBHOOK_QUEUE = "WebhookQueue"
WEBHOOK_DLQ = "WebhookDlq"
WEBHOOK_TTL_ATTRIBUTE = "expires_at"
CTX_WEBHOOK_SECRET_PARAMETER = "webhook_secret_parameter"
DEFAULT_WEBHOOK_SECRET_PARAMETER = "/marketpay/stripe/webhook-secret"
# The receiver verifies and queues (one SSM read per five minutes, one SendMessage); the processor handles a
# batch of up to 10 events, each a few DynamoDB calls and maybe one SendMessage.
WEBHOOK_RECEIVER = FunctionSpec("WebhookReceiver", "functions.webhooks.receiver.handler", "webhooks", 10, hot_path=True)
WEBHOOK_PROCESSOR = FunctionSpec("WebhookProcessor", "functions.webhooks.processor.handler", "webhooks", 30,
                                 hot_path=True)
OUT_WEBHOOK_QUEUE_URL = "WebhookQueueUrl"
OUT_WEBHOOK_DLQ_URL = "WebhookDlqUrl"
OUT_WEBHOOK_EVENTS_TABLE = "WebhookEventsTableName"
ALL_FUNCTIONS = (*ALL_FUNCTIONS, WEBHOOK_RECEIVER, WEBHOOK_PROCESSOR)

# --- notifications out (issue 16c; infra/constructs/notifications.py) ----------------------------------------
from functions.shared.names import (  # noqa: E402, F401 - the runtime names, re-exported (kept with this block)
    ENV_NOTIFICATION_ENDPOINTS_TABLE,
    ENV_NOTIFICATIONS_DLQ_URL,
    ENV_NOTIFICATIONS_QUEUE_URL,
)

NOTIFICATIONS = "Notifications"  # the construct
NOTIFICATION_ENDPOINTS = "NotificationEndpoints"  # the table: one endpoint per client_id
NOTIFICATIONS_QUEUE = "NotificationsQueue"
NOTIFICATIONS_DLQ = "NotificationsDlq"  # events not delivered within 3 days (and the queue's poison messages)
NOTIFICATION_STREAM_DLQ = "NotificationStreamDlq"  # stream batches the Notifier failed on (positions only)
# Messages are retried for 3 days by the Deliverer itself; the redrive count only catches a Deliverer that fails
# outright on a message (about 26 receives fit in 3 days of backoff).
NOTIFICATIONS_MAX_RECEIVE_COUNT = 50
# The stream mapping: records older than a day are given up (their positions go to NotificationStreamDlq).
NOTIFIER_STREAM_BATCH_SIZE = 100
NOTIFIER_STREAM_RETRIES = 10
NOTIFIER_MAX_RECORD_AGE_H = 24
# Stream records of orders and pay-outs, into events on NotificationsQueue.
NOTIFIER = FunctionSpec("Notifier", "functions.notify.notifier.handler", "notify", 30, hot_path=True)
# One signed POST per message, each bounded by notification_timeout_s (5 s): a batch of 5 fits in 30 s.
DELIVERER = FunctionSpec("Deliverer", "functions.notify.deliverer.handler", "notify", 30, hot_path=True)
DELIVERER_BATCH_SIZE = 5
ALL_FUNCTIONS = (*ALL_FUNCTIONS, NOTIFIER, DELIVERER)
OUT_NOTIFICATION_QUEUE_URLS = {
    NOTIFICATIONS_QUEUE: "NotificationsQueueUrl",
    NOTIFICATIONS_DLQ: "NotificationsDlqUrl",
    NOTIFICATION_STREAM_DLQ: "NotificationStreamDlqUrl",
}
OUT_NOTIFICATION_ENDPOINTS_TABLE = "NotificationEndpointsTableName"
ROUTES = (*ROUTES, ("PUT", "/v1/notification_endpoint"), ("GET", "/v1/notification_endpoint"))

# --- refunds (issue 16 a): infra/constructs/refunds.py ------------------------------------------------------------
from functions.shared.names import (  # noqa: E402, F401 - the runtime names, re-exported for the stack's constructs
    ENV_REFUNDS_DLQ_URL,
    ENV_REFUNDS_QUEUE_URL,
    ENV_REFUNDS_TABLE,
)

REFUNDS_CONSTRUCT = "RefundsPart"
REFUNDS = "Refunds"
REFUNDS_QUEUE = "RefundsQueue"
REFUNDS_DLQ = "RefundsDlq"
# One refund per message: at most three PSP calls (look-up or create, retrieve, reversal with its look-up).
REFUND_WORKER = FunctionSpec("RefundWorker", "functions.executor.refund.handler", "refunds", 45)
OUT_REFUNDS_TABLE = "RefundsTableName"
OUT_REFUNDS_QUEUE = "RefundsQueueUrl"
OUT_REFUNDS_DLQ = "RefundsDlqUrl"
# What sellers owe (refunds after the transfer whose reversal their account refused), alarmed past this many minor
# units on one seller (the worker's SellerOwedMinor metric: the seller's owed after each refusal).
OWED_METRIC = "SellerOwedMinor"
OWED_ALARM_THRESHOLD_MINOR = 100_000
REFUND_ROUTES = (
    ("POST", "/v1/payments/{payment_order_id}/refunds"),
    ("GET", "/v1/refunds/{refund_id}"),
)
ROUTES = (*ROUTES, *REFUND_ROUTES)
# Checks and money orders (issue 17): an operator records the funds, or a bounce (functions/payment/offline.py).
OFFLINE_ROUTES = (
    ("POST", "/v1/checkouts/{checkout_id}/offline_payments"),
    ("POST", "/v1/checkouts/{checkout_id}/offline_payments/bounce"),
)
ROUTES = (*ROUTES, *OFFLINE_ROUTES)
ALL_FUNCTIONS = (*ALL_FUNCTIONS, REFUND_WORKER)

# --- disputes (issue 16): infra/constructs/disputes.py -------------------------------------------------------------
from functions.shared.names import ENV_DISPUTES_TABLE  # noqa: E402, F401 - re-exported for the stack's constructs

DISPUTES_CONSTRUCT = "DisputesPart"
DISPUTES = "Disputes"
OUT_DISPUTES_TABLE = "DisputesTableName"

# --- API keys (issue 21): infra/constructs/api.py -------------------------------------------------------------------
from functions.shared.names import (  # noqa: E402, F401 - re-exported for the stack's constructs
    API_RATE_TTL_ATTRIBUTE,
    ENV_API_KEYS_TABLE,
    ENV_API_RATE_TABLE,
)

API_KEYS = "ApiKeys"
API_RATE_WINDOWS = "ApiRateWindows"
OUT_API_KEYS_TABLE = "ApiKeysTableName"
API_AUTHORIZER = FunctionSpec("ApiAuthorizer", "functions.auth.authorizer.handler", "auth", 5, hot_path=True)
ALL_FUNCTIONS = (*ALL_FUNCTIONS, API_AUTHORIZER)

# Internal reconciliation (issue 19): nightly, and on demand (`python -m ops recon internal`).
INTERNAL_RECON = FunctionSpec("InternalRecon", "functions.recon.internal_handler.handler", "recon-internal", 900)
INTERNAL_RECON_CONSTRUCT = "InternalReconciliation"
INTERNAL_RECON_SCHEDULE = "InternalReconNightly"
INTERNAL_RECON_CRON = {"minute": "30", "hour": "2"}  # 02:30 UTC, after the day's settlement files
UNEXPLAINED_FINDINGS_METRIC = "UnexplainedFindings"
ALL_FUNCTIONS = (*ALL_FUNCTIONS, INTERNAL_RECON)
