"""What a seller owes (a refund's share its connected account could not give back), kept back from the next
transfer of one of its orders (docs/decisions.md "Refunds": the netting rule).

The Transfer worker calls `net_owed` after begin_transfer (the pay-out TRANSFERRING: refunds of the order wait until
its transfer id is known, so net_minor no longer moves) and before it sends. On the pay-out's first attempt it
takes k = min(owed, net) once: the wallet movement `netting#<order>` (available -k on the order's shard, owed -k on
the owed shard, one transaction, refused if the owed shard no longer covers k; written even for k = 0, so it is the
one decision), then `netted_minor` on the pay-out, then the ledger's `netting#<order>`. Killed between two of
these, the next attempt finds the movement and finishes with its k; the transfer then sends net - k (the same
amount on every attempt of its key). A later attempt that finds no decision nets nothing (a send may have gone out
with the whole net), and writes that 0 as the decision.
"""

from __future__ import annotations

from typing import Any

from functions.ledger import journal
from functions.shared import psp_units
from functions.shared.money import Money
from functions.shared.names import NETTING
from functions.shared.tables import PayoutsTable, RefundsTable, WalletTable
from functions.wallet import refunds as wallet_refunds


def net_owed(payout: dict[str, Any], now: str) -> int:
    """The amount this pay-out's transfer keeps back (0 when the seller owes nothing), decided once."""
    order_id, seller, currency = payout["payment_order_id"], payout["seller_account"], payout["currency"]
    if payout.get("netted_minor") is not None:
        netted = int(payout["netted_minor"])
    elif payout.get("transfer_id"):
        return 0
    else:
        netted = _decide(payout, WalletTable.from_settings(), now)
        refunds = RefundsTable.from_settings()
        if not refunds.record_netting(order_id, netted, now):
            current = PayoutsTable.from_settings().get(order_id) or {}
            netted = int(current.get("netted_minor") or 0)
    if netted:  # once by its id: a worker killed before it is resumed here
        journal.record(journal.netting(order_id, seller, Money(netted, currency)))
    return netted


def _decide(payout: dict[str, Any], wallet: WalletTable, now: str) -> int:
    """k, decided by the once-only movement `netting#<order>`, written even for 0: two deliveries of the pay-out
    at once both end with the k of whichever wrote it first (the loser reads it back), so the wallet, the pay-out
    and the ledger never take different amounts."""
    order_id, seller, currency = payout["payment_order_id"], payout["seller_account"], payout["currency"]
    applied = wallet.get_movement(NETTING, order_id)
    if applied is None:
        first_attempt = int(payout.get("transfer_attempts", 0)) <= 1
        k = min(wallet_refunds.owed(seller, currency, wallet), int(payout["net_minor"])) if first_attempt else 0
        k -= k % psp_units.minor_step(currency)  # net - k must stay an amount Stripe can move (KWD: 0.010 steps)
        if wallet_refunds.netting(seller, order_id, Money(k, currency), now, wallet):
            return k
        applied = wallet.get_movement(NETTING, order_id)
    return -int(applied["owed_delta"])


def to_send(payout: dict[str, Any]) -> dict[str, Any]:
    """The pay-out as the PSP call sees it: its net less what was netted."""
    return {**payout, "net_minor": int(payout["net_minor"]) - int(payout.get("netted_minor") or 0)}
