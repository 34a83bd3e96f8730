"""A dispute's ledger transactions (docs/decisions.md "Disputes"), each balanced, each once under its id:
`dispute_fee#<dispute_id>`, and per order part `<kind>#<dispute_id>:<payment_order_id>`.

Accounts added: `disputed_funds:<psp>` (debit-positive: money the PSP withdrew for an open dispute, ours to get
back if it is won; zero for every closed dispute) and `dispute_fees:<psp>` (an expense: Stripe keeps the fee).
The wallet's twin of the seller's side is functions/wallet/disputes.py.
"""

from __future__ import annotations

from functions.ledger.journal import (
    PLATFORM_REVENUE,
    Entry,
    Transaction,
    psp_receivable,
    seller_available,
    seller_pending,
    seller_receivable,
)
from functions.shared.money import Money
from functions.shared.names import DISPUTE, DISPUTE_FEE, DISPUTE_LOST, DISPUTE_WON, dispute_part_reference


def disputed_funds(psp: str) -> str:
    return f"disputed_funds:{psp}"


def dispute_fees(psp: str) -> str:
    return f"dispute_fees:{psp}"


def _entries(*pairs: tuple[str, Money]) -> tuple[Entry, ...]:
    return tuple(Entry(account, amount) for account, amount in pairs if amount.minor)


def fee(dispute_id: str, amount: Money, psp: str) -> Transaction:
    """The PSP's dispute fee: an expense, paid out of what the PSP holds for us; never given back."""
    return Transaction(kind=DISPUTE_FEE, reference=dispute_id, description=f"dispute fee of {dispute_id}",
                       entries=(Entry(dispute_fees(psp), amount), Entry(psp_receivable(psp), -amount)))


def opened(dispute_id: str, order_id: str, seller: str, amount: Money, seller_share: Money, psp: str,
           timing: str) -> Transaction:
    """The part leaves our PSP balance. Held (not transferred): all of it is disputed funds; the pay-out is
    blocked. Transferred: the seller owes its share (a receivable, `owed`), the rest is disputed funds."""
    return Transaction(kind=DISPUTE, reference=dispute_part_reference(dispute_id, order_id),
                       payment_order_id=order_id, description=f"dispute {dispute_id} opened ({timing})",
                       entries=_entries((seller_receivable(seller), seller_share),
                                        (disputed_funds(psp), amount - seller_share),
                                        (psp_receivable(psp), -amount)))


def won(dispute_id: str, order_id: str, seller: str, amount: Money, owed_back: Money, credited: Money,
        psp: str) -> Transaction:
    """Reinstated: the part returns to our PSP balance. What the seller was made to owe is given back: out of
    its receivable as far as it is still owed, the rest (netted meanwhile) credited to its available."""
    return Transaction(kind=DISPUTE_WON, reference=dispute_part_reference(dispute_id, order_id),
                       payment_order_id=order_id, description=f"dispute {dispute_id} won",
                       entries=_entries((psp_receivable(psp), amount),
                                        (disputed_funds(psp), -(amount - owed_back - credited)),
                                        (seller_receivable(seller), -owed_back),
                                        (seller_available(seller), -credited)))


def lost_held(dispute_id: str, order_id: str, seller: str, amount: Money, psp: str) -> Transaction:
    """Lost while the order was still held: the seller's pending bears the whole part (no commission yet)."""
    return Transaction(kind=DISPUTE_LOST, reference=dispute_part_reference(dispute_id, order_id),
                       payment_order_id=order_id, description=f"dispute {dispute_id} lost (held)",
                       entries=(Entry(seller_pending(seller), amount), Entry(disputed_funds(psp), -amount)))


def lost_released(dispute_id: str, order_id: str, seller: str, seller_share: Money, commission_share: Money,
                  psp: str) -> Transaction:
    """Lost after the release, before any transfer: the seller's share out of its available, the commission's
    share out of our revenue (the platform gives its commission up, as for a refund)."""
    return Transaction(kind=DISPUTE_LOST, reference=dispute_part_reference(dispute_id, order_id),
                       payment_order_id=order_id, description=f"dispute {dispute_id} lost (released)",
                       entries=_entries((seller_available(seller), seller_share),
                                        (PLATFORM_REVENUE, commission_share),
                                        (disputed_funds(psp), -(seller_share + commission_share))))


def lost_transferred(dispute_id: str, order_id: str, commission_share: Money, psp: str) -> Transaction:
    """Lost after the transfer: the seller's share is owed since the dispute opened; the commission's share
    leaves our revenue."""
    return Transaction(kind=DISPUTE_LOST, reference=dispute_part_reference(dispute_id, order_id),
                       payment_order_id=order_id, description=f"dispute {dispute_id} lost (transferred)",
                       entries=(Entry(PLATFORM_REVENUE, commission_share),
                                Entry(disputed_funds(psp), -commission_share)))
