"""Payouts for on-call: everything known about one order's payout, and putting a FAILED or dead-lettered one back
to work.

A retry never transfers anything itself: it puts the payout back to RELEASED (FAILED, the one allowed move back)
or under the sweeper's watch (dead-lettered), due now, and sends it to PayoutsQueue; the Transfer worker runs the
idempotent path with the same PSP key (`transfer:<payment_order_id>`), so a transfer that was made is found,
never made twice. If the send is lost, the sweeper sends it (it is due now).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from functions.payment.payouts import send_to_transfer
from functions.shared import clock
from functions.shared.names import MONEY_CYCLE_KINDS, ledger_transaction_id
from functions.shared.status import PayoutStatus
from functions.shared.tables import LedgerTable, PayoutsTable, SellersTable, WalletTable
from ops.orders import Action, Outcome


@dataclass(frozen=True)
class PayoutView:
    payout: dict[str, Any]
    seller: dict[str, Any] | None
    ledger: dict[str, dict[str, Any] | None]  # kind -> transaction <kind>#<order>
    movements: dict[str, dict[str, Any] | None]  # kind -> wallet movement MOVE#<kind>#<order>


def load_payout(payouts: PayoutsTable, sellers: SellersTable, ledger: LedgerTable, wallet_table: str,
                payment_order_id: str) -> PayoutView | None:
    payout = payouts.get(payment_order_id)
    if payout is None:
        return None
    ids = {kind: ledger_transaction_id(kind, payment_order_id) for kind in MONEY_CYCLE_KINDS}
    transactions = ledger.get_many(ids.values())
    wallet = WalletTable(wallet_table)
    moves = {kind: wallet.get_movement(kind, payment_order_id) for kind in MONEY_CYCLE_KINDS}
    return PayoutView(payout, sellers.get(payout["seller_account"]),
                      {kind: transactions.get(ids[kind]) for kind in MONEY_CYCLE_KINDS}, moves)


def retry_payout(payouts: PayoutsTable, payment_order_id: str, *, dry_run: bool = False) -> Outcome:
    """FAILED -> RELEASED (retry_failed), or a dead-lettered RELEASED/TRANSFERRING payout back under watch; then
    one message to PayoutsQueue. Anything else is left as it is (nothing to retry)."""
    payout = payouts.get(payment_order_id)
    if payout is None:
        return Outcome(Action.LEFT, f"no payout {payment_order_id} in {payouts.table}")
    status = PayoutStatus(payout["payout_status"])
    if status is PayoutStatus.FAILED:
        if dry_run:
            return Outcome(Action.MOVED, f"would move FAILED ({payout.get('payout_failure_code')}) -> RELEASED")
        if not payouts.retry_failed(payment_order_id, clock.iso()):
            return Outcome(Action.LEFT, f"{payment_order_id} is no longer FAILED: look again")
        detail = f"FAILED ({payout.get('payout_failure_code')}) -> RELEASED"
    elif status in (PayoutStatus.RELEASED, PayoutStatus.TRANSFERRING) and "dead_letter_reason" in payout:
        if dry_run:
            return Outcome(Action.REQUEUED, f"would put the dead-lettered {status.value} payout back under watch")
        if not payouts.requeue_dead_lettered(payment_order_id, clock.iso()):
            return Outcome(Action.LEFT, f"{payment_order_id} moved meanwhile: look again")
        detail = f"dead-lettered {status.value} payout back under watch (attempts counted afresh)"
    elif status.is_final:
        return Outcome(Action.ALREADY_FINAL, f"{status.value}: nothing to retry")
    else:
        return Outcome(Action.WATCHED, f"{status.value}, not failed nor dead-lettered: the sweeper watches it"
                                       + (f" (next look {payout['due_at']})" if "due_at" in payout else ""))
    sent = "sent to PayoutsQueue" if not send_to_transfer([payment_order_id]) else \
        "PayoutsQueue refused it: the sweeper sends it (due now)"
    return Outcome(Action.MOVED if status is PayoutStatus.FAILED else Action.REQUEUED, f"{detail}; {sent}")

