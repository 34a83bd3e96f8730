"""charge.dispute.*: the event's Dispute object to the dispute path (functions/disputes/service.py), which the
status machine and once-only steps make safe to run for every delivery, repeated or out of order."""

from __future__ import annotations

from functions.disputes import service
from functions.webhooks.events import WebhookEvent

DISPUTE_TYPES = ("charge.dispute.created", "charge.dispute.updated", "charge.dispute.funds_withdrawn",
                 "charge.dispute.funds_reinstated", "charge.dispute.closed")


def dispute_event(event: WebhookEvent) -> str:
    return f"dispute_{service.apply_psp_dispute(event.obj)}"
