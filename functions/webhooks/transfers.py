"""transfer.reversed: re-check the pay-out of the Transfer. Reversals we make (the refund path) carry metadata
`refund_id` (REFUND_METADATA_KEY) and are booked by that path; any other reversal, or a reversed Transfer that no
pay-out of ours recorded, is a discrepancy: a ReviewQueue message (alarm), one per reversal, with a deterministic
`discrepancy_id` so a repeated event repeats nothing a reviewer must read twice. Nothing is booked here.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aws_lambda_powertools import Logger

from functions.shared import psp_units, queues
from functions.shared.tables import PayoutsTable
from functions.webhooks.events import WebhookEvent

logger = Logger(service="webhooks")

REFUND_METADATA_KEY = "refund_id"  # the refund path sets it on each Transfer reversal it creates


def transfer_reversed(event: WebhookEvent, payouts: PayoutsTable | None = None) -> str:
    transfer = event.obj
    transfer_id = str(transfer.get("id", ""))
    order_id = str(event.metadata.get("payment_order_id") or "")
    payouts = payouts or PayoutsTable.from_settings()
    payout = payouts.get(order_id) if order_id else None
    if payout is None or payout.get("transfer_id") != transfer_id:
        _review(event, "transfer_reversed_unknown_transfer", transfer_id, payout,
                f"transfer {transfer_id} was reversed; no pay-out of ours recorded it")
        return "review"
    reversals = list((transfer.get("reversals") or {}).get("data") or [])
    unrequested = [r for r in reversals if not (r.get("metadata") or {}).get(REFUND_METADATA_KEY)]
    if not reversals and int(transfer.get("amount_reversed") or 0) > 0:
        unrequested = [{"id": f"{transfer_id}:amount_reversed:{transfer.get('amount_reversed')}"}]
    for reversal in unrequested:
        _review(event, "transfer_reversal_not_requested", str(reversal.get("id")), payout,
                f"transfer {transfer_id} of payment order {order_id} was reversed without a refund of ours")
    return "review" if unrequested else "booked_by_refund_path"


def _review(event: WebhookEvent, category: str, reference: str, payout: dict[str, Any] | None,
            explanation: str) -> None:
    transfer = event.obj
    logger.warning("unexpected transfer reversal", extra={"category": category, "transfer_id": transfer.get("id"),
                                                          "reference": reference})
    identity = f"webhooks:{category}:{reference}"
    queues.send_for_review({
        "source": "webhooks", "category": category, "explanation": explanation,
        "discrepancy_id": hashlib.sha256(identity.encode()).hexdigest()[:32],
        "transfer_id": transfer.get("id"), "reversal": reference, "event_id": event.id,
        "amount_reversed_minor": _minor(transfer, "amount_reversed"),
        "currency": str(transfer.get("currency", "")).upper(),
        "payment_order_id": (payout or {}).get("payment_order_id") or event.metadata.get("payment_order_id"),
        "seller_account": (payout or {}).get("seller_account")})


def _minor(transfer: dict[str, Any], field: str) -> int | None:
    """A Stripe amount of the transfer in our minor units (Stripe's unit differs for ISK, UGX...)."""
    currency = str(transfer.get("currency") or "").upper()
    if not currency or transfer.get(field) is None:
        return None
    return psp_units.from_stripe_amount(currency, int(transfer[field])).minor
