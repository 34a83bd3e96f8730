"""Settings read from the environment and validated once per cold start: a missing name fails loudly."""

from __future__ import annotations

import os
from functools import cache

from pydantic import BaseModel, Field


class Settings(BaseModel):
    payment_events_table: str = Field(min_length=1)
    payment_orders_table: str = Field(min_length=1)
    wallet_table: str = Field(min_length=1)
    ledger_table: str = Field(min_length=1)
    # Every function gets it; recon's own settings require it (it hands charges back). Empty only in old tools.
    charges_table: str = ""
    recon_table: str = ""
    sellers_table: str = ""
    payouts_table: str = ""
    orders_queue_url: str = ""
    workflow_dlq_url: str = ""
    review_queue_url: str = ""
    payouts_queue_url: str = ""
    payouts_dlq_url: str = ""
    state_machine_arn: str = ""
    settlement_bucket: str = ""
    psp_api_base: str = ""
    psp_api_key: str = ""
    psp_api_key_parameter: str = ""
    psp_name: str = "stripe"
    # One PSP call's budget; an invocation makes at most two (look-up, create) inside the Executor's 20 s.
    psp_timeout_s: float = 8.0
    # Seconds a charge may stay EXECUTING before the sweeper drives it again. Above the Express workflow's
    # five-minute limit, so a re-drive never overlaps a still-running execution.
    executing_deadline_s: int = 360
    # Seconds a stored charge may wait for its queue message before the sweeper enqueues it (the outbox grace).
    enqueue_grace_s: int = 60
    max_attempts: int = 5
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

    @classmethod
    def from_env(cls) -> Settings:
        values = {name: os.environ[name.upper()] for name in cls.model_fields if name.upper() in os.environ}
        return cls.model_validate(values)


@cache
def settings() -> Settings:
    return Settings.from_env()


def reload_settings() -> Settings:
    """Forget the cached settings (tests change the environment between cases)."""
    settings.cache_clear()
    return settings()
