"""The wallet side of each step of the money cycle, each applied once per order (docs/design.md "Wallet").

payin: pending +gross; release: pending -gross, available +net; transfer: available -net, transferred +net.
The ledger's twin of each is functions/ledger/journal.py; wallet = ledger per seller, currency and bucket.
"""

from __future__ import annotations

from functions.shared.money import Money
from functions.shared.names import PAYIN, RELEASE, TRANSFER
from functions.shared.tables import WalletTable


def credit_pending(seller: str, order_id: str, amount: Money, now: str, table: WalletTable | None = None) -> bool:
    """True if credited now, False if this order's pay-in was applied before."""
    _positive(amount)
    return (table or WalletTable.from_settings()).apply_movement(
        seller, PAYIN, order_id, amount.currency, pending=amount.minor, now=now,
        details={"payment_order_id": order_id, "gross_minor": amount.minor})


def release(seller: str, order_id: str, gross: Money, commission: Money, now: str,
            table: WalletTable | None = None) -> bool:
    """Pending -gross, available +net (gross less commission): the order's share is the seller's to transfer."""
    _positive(gross)
    net = gross - commission
    if commission.minor < 0 or net.minor < 0:
        raise ValueError(f"{order_id}: commission {commission} outside 0..{gross}")
    return (table or WalletTable.from_settings()).apply_movement(
        seller, RELEASE, order_id, gross.currency, pending=-gross.minor, available=net.minor, now=now,
        details={"payment_order_id": order_id, "gross_minor": gross.minor, "commission_minor": commission.minor,
                 "net_minor": net.minor})


def transfer_out(seller: str, order_id: str, net: Money, transfer_id: str, now: str,
                 table: WalletTable | None = None) -> bool:
    """Available -net, transferred +net, naming the PSP transfer. A net of 0 (commission 10000 bps) has
    nothing to transfer: refused here as in the ledger."""
    _positive(net)
    return (table or WalletTable.from_settings()).apply_movement(
        seller, TRANSFER, order_id, net.currency, available=-net.minor, transferred=net.minor, now=now,
        details={"payment_order_id": order_id, "net_minor": net.minor, "transfer_id": transfer_id})


def _positive(amount: Money) -> None:
    if amount.minor <= 0:
        raise ValueError(f"a movement's amount must be positive, not {amount}")
