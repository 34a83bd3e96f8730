"""Double-entry transactions: immutable, balanced per currency, written once under a deterministic id.

Sign convention: an entry's amount is signed minor units, debit positive, credit negative. Every transaction,
and therefore all accounts together, sum to zero per currency. A pay-in debits the PSP receivable (the PSP owes
us the money) and credits the seller's pending account (we owe it to the seller once delivered); a release moves
the net to the seller's available account and the commission to our revenue; a transfer pays the available net
out of what the PSP holds for us. So each wallet bucket equals the ledger: pending = -sum(seller_pending:s),
available = -sum(seller_available:s), transferred = the sum of the seller's `transfer` transactions' nets.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from functions.shared import clock
from functions.shared.errors import LedgerConflict, UnbalancedTransaction
from functions.shared.money import Money
from functions.shared.names import (
    FEE,
    NETTING,
    OFFLINE_PSP,
    PAYIN,
    REFUND,
    RELEASE,
    REVERSAL,
    TRANSFER,
    ledger_transaction_id,
)
from functions.shared.tables import LedgerTable

# Checks and money orders (issue 17): their funds are deposited in the platform's bank account, not held by a PSP.
BANK_DEPOSITS = "bank_deposits"


def psp_receivable(psp: str) -> str:
    """Where the money of a pay-in is: what the PSP holds for us, or for an offline payment the bank deposits."""
    return BANK_DEPOSITS if psp == OFFLINE_PSP else f"psp_receivable:{psp}"


def seller_pending(seller_account: str) -> str:
    return f"seller_pending:{seller_account}"


def seller_available(seller_account: str) -> str:
    return f"seller_available:{seller_account}"


PLATFORM_REVENUE = "platform_revenue"


def psp_fees(psp: str) -> str:
    return f"psp_fees:{psp}"


@dataclass(frozen=True)
class Entry:
    account: str
    amount: Money


@dataclass(frozen=True)
class Transaction:
    """`payment_order_id`: the order a transaction belongs to, the key of the ledger's order index. Every step of
    the money cycle names its order here (its reference is the order too); a refund, recorded under the PSP's
    refund id, is found by its order only through it."""

    kind: str
    reference: str
    entries: tuple[Entry, ...]
    description: str = ""
    payment_order_id: str = ""

    def __post_init__(self) -> None:
        if len(self.entries) < 2:
            raise UnbalancedTransaction(f"{self.transaction_id}: a transaction needs at least two entries")
        totals: dict[str, int] = defaultdict(int)
        for entry in self.entries:
            if entry.amount.minor == 0:
                raise UnbalancedTransaction(f"{self.transaction_id}: zero entry on {entry.account}")
            totals[entry.amount.currency] += entry.amount.minor
        unbalanced = {currency: total for currency, total in totals.items() if total != 0}
        if unbalanced:
            raise UnbalancedTransaction(f"{self.transaction_id} does not balance: {unbalanced}")

    @property
    def transaction_id(self) -> str:
        return ledger_transaction_id(self.kind, self.reference)

    def to_item(self) -> dict[str, Any]:
        item = {
            "transaction_id": self.transaction_id,
            "kind": self.kind,
            "reference": self.reference,
            "description": self.description or None,
            "entries": [
                {"account": e.account, "amount_minor": e.amount.minor, "currency": e.amount.currency}
                for e in self.entries
            ],
            "created_at": clock.iso(),
        }
        if self.payment_order_id:  # the key of a sparse index: absent, never empty or null
            item["payment_order_id"] = self.payment_order_id
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Transaction:
        return cls(
            kind=item["kind"],
            reference=item["reference"],
            description=item.get("description") or "",
            payment_order_id=item.get("payment_order_id") or "",
            entries=tuple(Entry(e["account"], Money(int(e["amount_minor"]), e["currency"])) for e in item["entries"]),
        )


def payin(payment_order_id: str, seller_account: str, amount: Money, psp: str) -> Transaction:
    return Transaction(
        kind=PAYIN,
        reference=payment_order_id,
        entries=(Entry(psp_receivable(psp), amount), Entry(seller_pending(seller_account), -amount)),
        payment_order_id=payment_order_id,
    )


def release(payment_order_id: str, seller_account: str, gross: Money, commission: Money) -> Transaction:
    """Delivery confirmed: the gross leaves pending, the net becomes the seller's, the commission our revenue
    (a zero side is left out: 0 or 10000 bps)."""
    net = gross - commission
    if not gross.is_positive() or commission.minor < 0 or net.minor < 0:
        raise UnbalancedTransaction(
            f"{ledger_transaction_id(RELEASE, payment_order_id)}: commission {commission} outside 0..{gross}")
    entries = [Entry(seller_pending(seller_account), gross)]
    entries += [Entry(seller_available(seller_account), -net)] if net.minor else []
    entries += [Entry(PLATFORM_REVENUE, -commission)] if commission.minor else []
    return Transaction(kind=RELEASE, reference=payment_order_id, entries=tuple(entries),
                       payment_order_id=payment_order_id)


def transfer(payment_order_id: str, seller_account: str, net: Money, psp: str, transfer_id: str) -> Transaction:
    """The net paid to the seller's connected account out of what the PSP holds for us."""
    return Transaction(
        kind=TRANSFER, reference=payment_order_id,
        entries=(Entry(seller_available(seller_account), net), Entry(psp_receivable(psp), -net)),
        description=f"transfer {transfer_id}", payment_order_id=payment_order_id,
    )


def psp_fee(reference: str, fee: Money, psp: str) -> Transaction:
    """A fee the PSP kept: our fee expense grows, what the PSP owes us shrinks."""
    return Transaction(
        kind=FEE, reference=reference,
        entries=(Entry(psp_fees(psp), fee), Entry(psp_receivable(psp), -fee)),
    )


def record(transaction: Transaction, table: LedgerTable | None = None) -> bool:
    """Write the transaction once. True if written now, False if an identical one was there already.

    A different transaction (entries or description) under the same id raises LedgerConflict: history is never
    overwritten.
    """
    table = table or LedgerTable.from_settings()
    existing = table.put_once(transaction.to_item())
    if existing is None:
        return True
    stored = Transaction.from_item(existing)
    # the description names a transfer's PSP id: a second transfer id for one order is a conflict too
    if (stored.entries, stored.description) != (transaction.entries, transaction.description):
        raise LedgerConflict(f"{transaction.transaction_id} exists with different entries")
    return False


# -- refunds (issue 16 a): each balanced, each once under `<kind>#<refund_id>` (netting: `netting#<order_id>`) --


def seller_receivable(seller_account: str) -> str:
    """What a seller owes us (debit-positive): a refund's share of money already transferred to it, until a
    reversal or a netting takes it back. The wallet's `owed` bucket equals its sum."""
    return f"seller_receivable:{seller_account}"


def _refund_entries(*pairs: tuple[str, Money]) -> tuple[Entry, ...]:
    return tuple(Entry(account, amount) for account, amount in pairs if amount.minor)


def refund_held(refund_id: str, payment_order_id: str, seller_account: str, amount: Money, psp: str) -> Transaction:
    """Refunded while still held: the seller's pending shrinks, and what the PSP holds for us."""
    return Transaction(kind=REFUND, reference=refund_id, payment_order_id=payment_order_id,
                       description=f"refund of {payment_order_id} (held)",
                       entries=_refund_entries((seller_pending(seller_account), amount),
                                               (psp_receivable(psp), -amount)))


def refund_released(refund_id: str, payment_order_id: str, seller_account: str, seller_share: Money,
                    commission_share: Money, psp: str) -> Transaction:
    """Refunded after the release, before the transfer: the seller's share leaves its available, the commission's
    share our revenue."""
    return Transaction(kind=REFUND, reference=refund_id, payment_order_id=payment_order_id,
                       description=f"refund of {payment_order_id} (released)",
                       entries=_refund_entries((seller_available(seller_account), seller_share),
                                               (PLATFORM_REVENUE, commission_share),
                                               (psp_receivable(psp), -(seller_share + commission_share))))


def refund_after_transfer(refund_id: str, payment_order_id: str, seller_account: str, seller_share: Money,
                          commission_share: Money, psp: str) -> Transaction:
    """Refunded after the transfer: the seller owes its share back (a receivable, taken back by a reversal or
    netted from its next transfers), the commission's share leaves our revenue."""
    return Transaction(kind=REFUND, reference=refund_id, payment_order_id=payment_order_id,
                       description=f"refund of {payment_order_id} (transferred)",
                       entries=_refund_entries((seller_receivable(seller_account), seller_share),
                                               (PLATFORM_REVENUE, commission_share),
                                               (psp_receivable(psp), -(seller_share + commission_share))))


def reversal(refund_id: str, payment_order_id: str, seller_account: str, share: Money, psp: str,
             reversal_id: str) -> Transaction:
    """A transfer reversal brought the seller's share back to our PSP balance: the receivable is paid."""
    return Transaction(kind=REVERSAL, reference=refund_id, payment_order_id=payment_order_id,
                       description=f"reversal {reversal_id}",
                       entries=(Entry(psp_receivable(psp), share), Entry(seller_receivable(seller_account), -share)))


def netting(payment_order_id: str, seller_account: str, amount: Money) -> Transaction:
    """What the seller owes, kept back from this order's transfer: its available pays its receivable."""
    return Transaction(kind=NETTING, reference=payment_order_id, payment_order_id=payment_order_id,
                       description=f"owed netted from the transfer of {payment_order_id}",
                       entries=(Entry(seller_available(seller_account), amount),
                                Entry(seller_receivable(seller_account), -amount)))
