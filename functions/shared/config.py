"""Settings read from the environment and validated once per cold start: a missing name fails loudly.

A setting the stack sets is read from its variable in functions/shared/names.py; any other from its name in
capitals (MAX_ATTEMPTS), for tests and tools.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from functions.shared import names
from functions.shared.routing import Routing, parse_routing


class Settings(BaseModel):
    model_config = ConfigDict(validate_by_name=True)

    payment_events_table: str = Field(min_length=1, validation_alias=names.ENV_PAYMENT_EVENTS_TABLE)
    payment_orders_table: str = Field(min_length=1, validation_alias=names.ENV_PAYMENT_ORDERS_TABLE)
    wallet_table: str = Field(min_length=1, validation_alias=names.ENV_WALLET_TABLE)
    ledger_table: str = Field(min_length=1, validation_alias=names.ENV_LEDGER_TABLE)
    # Every function gets it; recon's own settings require it (it hands charges back). Empty only in old tools.
    charges_table: str = Field("", validation_alias=names.ENV_CHARGES_TABLE)
    recon_table: str = Field("", validation_alias=names.ENV_RECON_TABLE)
    sellers_table: str = Field("", validation_alias=names.ENV_SELLERS_TABLE)
    payouts_table: str = Field("", validation_alias=names.ENV_PAYOUTS_TABLE)
    orders_queue_url: str = Field("", validation_alias=names.ENV_ORDERS_QUEUE_URL)
    workflow_dlq_url: str = Field("", validation_alias=names.ENV_WORKFLOW_DLQ_URL)
    review_queue_url: str = Field("", validation_alias=names.ENV_REVIEW_QUEUE_URL)
    payouts_queue_url: str = Field("", validation_alias=names.ENV_PAYOUTS_QUEUE_URL)
    payouts_dlq_url: str = Field("", validation_alias=names.ENV_PAYOUTS_DLQ_URL)
    state_machine_arn: str = Field("", validation_alias=names.ENV_STATE_MACHINE_ARN)
    settlement_bucket: str = Field("", validation_alias=names.ENV_SETTLEMENT_BUCKET)
    psp_api_base: str = Field("", validation_alias=names.ENV_PSP_API_BASE)
    psp_api_key: str = ""
    psp_api_key_parameter: str = Field("", validation_alias=names.ENV_PSP_API_KEY_PARAMETER)
    psp_name: str = "stripe"
    # Which PSP charges what (functions/shared/routing.py): JSON rules, first match wins, else psp_name. Parsed and
    # checked here, so a rule that cannot be read exactly as written stops the cold start.
    psp_routing: str = ""
    _routing: Routing = PrivateAttr(default_factory=Routing)
    # One PSP call's budget; an invocation makes at most two (look-up, create) inside the Executor's 20 s.
    psp_timeout_s: float = 8.0
    # Seconds a charge may stay EXECUTING before the sweeper drives it again. Above the Express workflow's
    # five-minute limit, so a re-drive never overlaps a still-running execution.
    executing_deadline_s: int = 360
    # Seconds a stored charge may wait for its queue message before the sweeper enqueues it (the outbox grace).
    enqueue_grace_s: int = 60
    max_attempts: int = 5
    # 3-D Secure (issue 17): seconds the buyer has to complete a challenge (PaymentIntent requires_action); past
    # it the sweeper's next attempt cancels the PaymentIntent and the orders end FAILED authentication_abandoned.
    # Above executing_deadline_s, so a completion webhook can bring the parked charge forward (bring_charge_forward).
    threeds_timeout_s: int = Field(default=1800, ge=600, le=86400)
    # A bank debit (SEPA, ACH: issue 17) is `processing` for days; its outcome comes by webhook, and this is the
    # backstop look-up if the webhook is lost. While it is processing, its look-ups do not count against
    # max_attempts until debit_max_wait_s from its creation (SEPA may take 14 business days, ~20 calendar days).
    debit_recheck_s: int = Field(default=4 * 86400, ge=3600, le=14 * 86400)
    debit_max_wait_s: int = Field(default=35 * 86400, ge=86400)
    # A US bank account Stripe could not verify at once: the buyer confirms the microdeposits sent to it (they
    # arrive in 1-2 business days); past this the PaymentIntent is cancelled as for an abandoned challenge.
    microdeposits_timeout_s: int = Field(default=10 * 86400, ge=86400, le=30 * 86400)
    # Checks and money orders (issue 17): whom the buyer pays (printed in the checkout's instructions) and the days
    # the orders wait for the funds; unpaid then, the sweeper ends them FAILED funds_not_received.
    offline_pay_to: str = Field(default="MarketPay Ltd, Payments Dept., 100 Market Street, San Francisco CA 94105",
                                min_length=1, max_length=200)
    offline_funds_days: int = Field(default=14, ge=1, le=180)
    # The throughput governor (README "Throughput ceiling"; the concurrency side is infra/governor.py): the
    # seconds one PSP call may spend waiting out 429s (functions/shared/psp.py RateLimitedRetries).
    psp_rate_limit_wait_s: float = Field(default=2.0, ge=0, le=4.0)
    # A payout's transfer: seconds TRANSFERRING before the sweeper sends it to PayoutsQueue again (above the
    # Transfer Lambda's 30 s timeout), and attempts before its dead letter: 30 is about four days of a platform
    # balance short (waits of 15 min × attempts, at most 6 h), then a human is told.
    transfer_deadline_s: int = 300
    max_transfer_attempts: int = 30
    # Shards of the charges' sweep index. Only ever raised: a shard is hash % count, so the shards of a smaller
    # count are a subset of a larger one's and charges written before a raise are still read (decisions.md).
    sweep_shards: int = 32
    # Commission of an order whose seller is not registered when it is released (frozen then, recorded on it).
    default_commission_bps: int = Field(default=0, ge=0, le=10000)
    # Webhooks in: the processor's dedupe table, the receiver's queue and its signing secret's SSM parameter.
    webhook_events_table: str = Field("", validation_alias=names.ENV_WEBHOOK_EVENTS_TABLE)
    webhook_queue_url: str = Field("", validation_alias=names.ENV_WEBHOOK_QUEUE_URL)
    webhook_secret_parameter: str = Field("", validation_alias=names.ENV_WEBHOOK_SECRET_PARAMETER)
    webhook_secret: str = ""  # tests and tools only (WEBHOOK_SECRET); deployed, the parameter above
    # Notifications out: where storefront endpoints are kept, the queue of events to deliver and its dead letters.
    notification_endpoints_table: str = Field("", validation_alias=names.ENV_NOTIFICATION_ENDPOINTS_TABLE)
    notifications_queue_url: str = Field("", validation_alias=names.ENV_NOTIFICATIONS_QUEUE_URL)
    notifications_dlq_url: str = Field("", validation_alias=names.ENV_NOTIFICATIONS_DLQ_URL)
    # One delivery's HTTP budget (connect + read), inside the Deliverer's 30 s for a batch of up to 5.
    notification_timeout_s: float = 5.0
    # Retries: waits of base * 2^(n-1) (+-25%, drawn from the event id), at most max, for 3 days after the
    # first attempt; then NotificationsDlq. The queue keeps messages 4 days (> 3 days + the longest wait).
    notification_backoff_base_s: int = 30
    notification_backoff_max_s: int = 6 * 3600
    notification_retry_window_s: int = 3 * 86400
    # Refunds (issue 16 a): the table, the Refund worker's queue and its dead letters; a refund the PSP still
    # calls pending is looked at again after refund_poll_delay_s (SQS DelaySeconds: at most 900).
    refunds_table: str = Field("", validation_alias=names.ENV_REFUNDS_TABLE)
    refunds_queue_url: str = Field("", validation_alias=names.ENV_REFUNDS_QUEUE_URL)
    refunds_dlq_url: str = Field("", validation_alias=names.ENV_REFUNDS_DLQ_URL)
    refund_poll_delay_s: int = Field(default=300, ge=0, le=900)
    # Disputes (issue 16): one item per PSP dispute (functions/disputes).
    disputes_table: str = Field("", validation_alias=names.ENV_DISPUTES_TABLE)
    # API keys (issue 21): the authorizer reads them; an answer of it is reused for api_key_cache_s.
    api_keys_table: str = Field("", validation_alias=names.ENV_API_KEYS_TABLE)
    api_key_cache_s: int = Field(default=60, ge=0, le=3600)
    # Per-client rate limit (requests per second, all routes) of a key that names none, and its counters' table.
    api_rate_table: str = Field("", validation_alias=names.ENV_API_RATE_TABLE)
    default_rate_limit_per_s: int = Field(default=50, ge=1, le=10_000)
    # The PSPs' circuit breakers (functions/shared/breaker.py): `breaker_failures` failures of a PSP (unreachable,
    # timed out, 5xx) within `breaker_window_s` open its breaker; after `breaker_cooldown_s` one call probes it.
    psp_health_table: str = Field("", validation_alias=names.ENV_PSP_HEALTH_TABLE)
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_window_s: int = Field(default=30, ge=1, le=3600)
    breaker_cooldown_s: int = Field(default=30, ge=1, le=3600)
    # Failover (functions/shared/routing.py): a checkout paid with the failover PSP's token is placed there while
    # the rules' PSP is down or was, within `failover_grace_s` (the route the storefront was given stays good).
    failover_grace_s: int = Field(default=900, ge=0, le=86400)
    # A charge parked while its PSP is down (nothing sent) waits this long before the sweeper dead-letters it.
    psp_outage_max_wait_s: int = Field(default=6 * 3600, ge=600, le=86400)
    # ... unless nothing of it was ever sent: then it ends FAILED `psp_unavailable` after this long (no money can
    # have moved, and the buyer is better told than kept waiting for hours).
    psp_unavailable_fail_after_s: int = Field(default=900, ge=60, le=86400)

    # Adyen (functions/shared/psp_adyen.py): its test platform unless live, and live needs the company account's
    # live URL prefix (Customer Area > Developers > API URLs); checked here so a wrong one fails at cold start.
    adyen_environment: Literal["test", "live"] = "test"
    adyen_live_prefix: str = Field("", pattern=r"^([A-Za-z0-9]+(-[A-Za-z0-9]+)*)?$", max_length=100)
    # Read as Stripe's are: the API key and the notifications' HMAC key (hex) from SSM SecureString parameters when
    # deployed (ADYEN_API_KEY_PARAMETER, ADYEN_HMAC_KEY_PARAMETER), or as values in tests and the local stack
    # (ADYEN_API_KEY, ADYEN_HMAC_KEY). The merchant account is not a secret. ADYEN_CHECKOUT_BASE overrides the
    # environment's URL: the Adyen sandbox's http://127.0.0.1:<port>/v71, locally only.
    adyen_api_key: str = ""
    adyen_api_key_parameter: str = ""
    adyen_hmac_key: str = ""
    adyen_hmac_key_parameter: str = ""
    adyen_merchant_account: str = Field("", max_length=80)
    adyen_checkout_base: str = Field("", pattern=r"^(https?://[^\s]+)?$", max_length=300)

    @model_validator(mode="after")
    def _adyen_live_has_prefix(self) -> Settings:
        if self.adyen_environment == "live" and not self.adyen_live_prefix:
            raise ValueError("ADYEN_ENVIRONMENT=live needs ADYEN_LIVE_PREFIX")
        if self.adyen_environment == "live" and self.adyen_checkout_base:
            raise ValueError("ADYEN_CHECKOUT_BASE (the sandbox's URL) cannot be set with ADYEN_ENVIRONMENT=live")
        return self

    @model_validator(mode="after")
    def _never_sent_fails_before_the_outage_limit(self) -> Settings:
        if self.psp_unavailable_fail_after_s >= self.psp_outage_max_wait_s:
            # else a charge never sent would be dead-lettered for a human instead of failing cleanly
            raise ValueError("PSP_UNAVAILABLE_FAIL_AFTER_S must be below PSP_OUTAGE_MAX_WAIT_S")
        return self

    @model_validator(mode="after")
    def _routing_is_readable(self) -> Settings:
        self._routing = parse_routing(self.psp_routing, default=self.psp_name)
        if "adyen" in self._routing.psps and not (
                self.adyen_merchant_account and (self.adyen_api_key or self.adyen_api_key_parameter)):
            # else checkouts would be placed for a charge step that cannot reach Adyen
            raise ValueError("PSP_ROUTING routes to adyen: ADYEN_MERCHANT_ACCOUNT and ADYEN_API_KEY_PARAMETER "
                             "(or ADYEN_API_KEY locally) must be set")
        return self

    @property
    def routing(self) -> Routing:
        return self._routing

    @classmethod
    def from_env(cls) -> Settings:
        variables = {name: field.validation_alias or name.upper() for name, field in cls.model_fields.items()}
        return cls.model_validate({name: os.environ[env] for name, env in variables.items() if env in os.environ})


@cache
def settings() -> Settings:
    return Settings.from_env()


def reload_settings() -> Settings:
    """Forget the cached settings (tests change the environment between cases)."""
    settings.cache_clear()
    return settings()
