"""What the Transfer worker and the sweeper's payout pass share, without `stripe` (the Sweeper has no psp layer):
the wait for a seller's account, and a payout's dead letter."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from functions.shared import clock, queues
from functions.shared.tables import PayoutsTable

AWAIT_SELLER = timedelta(hours=1)  # a seller without a connected account is looked at again after this


def dead_letter(payouts: PayoutsTable, payout: dict[str, Any], reason: str, now: datetime) -> str:
    """The dead letter first, then the payout out of the sweeper's index (status kept): killed between the two,
    it is sent again rather than left out of every index with no alarm."""
    queues.dead_letter_payout(payout["payment_order_id"], "transfer", reason,
                              int(payout.get("transfer_attempts", 0)), detail(payout))
    if not payouts.mark_dead_lettered(payout["payment_order_id"], payout.get("due_at", ""), reason, clock.iso(now)):
        return "nothing"
    return "dead_lettered"


def out_of_attempts(payouts: PayoutsTable, payout: dict[str, Any], now: datetime) -> str:
    """Past max transfer attempts (a balance short for days, a transfer that never answers): a human is told."""
    reason = (f"{payout['payout_status']} after {payout.get('transfer_attempts')} transfer attempts "
              f"({payout.get('last_error', '')})")
    return dead_letter(payouts, payout, reason, now)


def detail(payout: dict[str, Any]) -> dict[str, Any]:
    """What a payout's dead letter says besides the error: enough to act on without opening the table."""
    return {key: payout.get(key) for key in ("seller_account", "checkout_id", "currency", "net_minor",
                                            "payout_status", "transfer_id")}
