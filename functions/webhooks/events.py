"""A Stripe event as the processor reads it (the receiver verified its signature before queueing it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


# A verified event still carries the buyer's billing details (name, email) on payment objects: a validation
# error names the failing field but never quotes the input, so nothing of it reaches a log or the DLQ's error.
class EventData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, hide_input_in_errors=True)

    obj: dict[str, Any] = Field(alias="object")


class WebhookEvent(BaseModel):
    """`account` is set on Connect events (the connected account's, e.g. payout.paid); `created` (Unix seconds)
    orders the facts recorded from events, which arrive in any order."""

    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=255)
    created: int = Field(ge=0)
    account: str | None = None
    data: EventData

    @property
    def obj(self) -> dict[str, Any]:
        return self.data.obj

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.obj.get("metadata") or {})
