"""Settings of the recon function beyond the shared ones, validated at cold start."""

from __future__ import annotations

import os
from functools import cache

from pydantic import BaseModel, Field


class ReconSettings(BaseModel):
    # Days an order recorded SUCCESS may stay unsettled before it is raised for review.
    missing_after_days: int = Field(default=3, ge=0)
    # Orders created within this margin before a file's latest row are left to the next file (PSP cut-off).
    cutoff_minutes: int = Field(default=120, ge=0)
    # Rows matched per batch: one batch of orders and ledger transactions is read at a time.
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    # Parallel DynamoDB requests (batch reads, fee writes) per run.
    io_workers: int = Field(default=8, ge=1, le=64)

    @classmethod
    def from_env(cls) -> ReconSettings:
        names = {field: f"RECON_{field.upper()}" for field in cls.model_fields}
        return cls.model_validate({field: os.environ[env] for field, env in names.items() if env in os.environ})


@cache
def recon_settings() -> ReconSettings:
    return ReconSettings.from_env()


def reload_recon_settings() -> ReconSettings:
    recon_settings.cache_clear()
    return recon_settings()
