"""Settings of the recon function beyond the shared ones, validated at cold start."""

from __future__ import annotations

import os
from functools import cache

from pydantic import BaseModel, Field

from functions.shared.config import Settings


class ReconSettings(BaseModel):
    # Days an order recorded SUCCESS may stay unsettled before it is raised for review.
    missing_after_days: int = Field(default=3, ge=0)
    # Orders created within this margin before a file's latest row are left to the next file (PSP cut-off).
    cutoff_minutes: int = Field(default=120, ge=0)
    # Rows matched per batch: one batch of orders and ledger transactions is read at a time.
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    # Parallel DynamoDB batch reads per run (each BatchGetItem carries 100 keys).
    read_workers: int = Field(default=8, ge=1, le=64)
    # Parallel fee writes per run (one conditional PutItem per PSP balance transaction).
    write_workers: int = Field(default=32, ge=1, le=128)
    # Larger objects are quarantined unread: ~2.4M rows of a Stripe report, what one 15-minute run can match
    # (docs/decisions.md, 2026-12-05, settlement intake refuses by size).
    max_file_bytes: int = Field(default=512 * 1024 * 1024, ge=1)

    @classmethod
    def from_env(cls) -> ReconSettings:
        names = {field: f"RECON_{field.upper()}" for field in cls.model_fields}
        return cls.model_validate({field: os.environ[env] for field, env in names.items() if env in os.environ})


class MissingSetting(RuntimeError):
    """An environment variable the recon function needs is not set."""


# Shared settings the recon function cannot run without (optional for the other functions).
REQUIRED_SHARED = ("recon_table", "charges_table", "settlement_bucket", "review_queue_url", "state_machine_arn",
                   "orders_queue_url", "payouts_table")


def check_shared(config: Settings) -> Settings:
    """Fail loudly at the first run when a name the recon function needs is missing from the environment."""
    missing = [name.upper() for name in REQUIRED_SHARED if not getattr(config, name)]
    if missing:
        raise MissingSetting(f"the recon function needs {', '.join(missing)}")
    return config


@cache
def recon_settings() -> ReconSettings:
    return ReconSettings.from_env()


def reload_recon_settings() -> ReconSettings:
    recon_settings.cache_clear()
    return recon_settings()
