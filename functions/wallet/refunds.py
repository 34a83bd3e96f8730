"""The wallet side of a refund's money (docs/decisions.md "Refunds"), each movement once under its reference.

refund, still held: pending -amount (the order's shard). Refund, released and not transferred: available -seller
share (the order's shard). Refund after the transfer: owed +seller share (the seller's owed shard). Reversal:
owed -share. Netting (the next transfer of one of the seller's orders): available -k on that order's shard and
owed -k on the owed shard, in one transaction. `transferred` keeps what transfers sent: a reversal or a netting
pays the seller's debt, it does not undo a transfer. The ledger's twin of each is functions/ledger/journal.py.
"""

from __future__ import annotations

from functions.shared.money import Money
from functions.shared.names import NETTING, REFUND, owed_shard_reference
from functions.shared.tables import WalletTable


def split_refund(amount: int, seller_remaining: int, gross_remaining: int, step: int = 1) -> tuple[int, int]:
    """(seller share, commission share) of a refund of `amount` out of what remains of an order: the seller's
    share is amount × seller_remaining / gross_remaining rounded half up, the commission's the rest, so the two
    add up to the refund exactly, neither exceeds what remains of its side, and refunding all that remains takes
    exactly all of each side (partial refunds never drift by a cent). With a PSP `step` (psp_units.minor_step:
    10 for KWD) and every figure a multiple of it, the split is made in steps, so the seller's share stays an
    amount a reversal or a later transfer can move."""
    if gross_remaining <= 0 or not 0 <= seller_remaining <= gross_remaining:
        raise ValueError(f"nothing to split: seller {seller_remaining} of gross {gross_remaining}")
    if not 0 < amount <= gross_remaining:
        raise ValueError(f"refund {amount} outside 1..{gross_remaining}")
    if step > 1 and not (amount % step or seller_remaining % step or gross_remaining % step):
        seller_steps, _ = split_refund(amount // step, seller_remaining // step, gross_remaining // step)
        return seller_steps * step, amount - seller_steps * step
    seller = (2 * amount * seller_remaining + gross_remaining) // (2 * gross_remaining)
    return seller, amount - seller


def refund_held(seller: str, order_id: str, refund_id: str, amount: Money, now: str,
                table: WalletTable | None = None) -> bool:
    return (table or WalletTable.from_settings()).apply_movement(
        seller, REFUND, refund_id, amount.currency, pending=-amount.minor, now=now,
        details={"payment_order_id": order_id, "gross_minor": amount.minor, "timing": "held"})


def refund_released(seller: str, order_id: str, refund_id: str, amount: Money, seller_share: Money, now: str,
                    table: WalletTable | None = None) -> bool:
    return (table or WalletTable.from_settings()).apply_movement(
        seller, REFUND, refund_id, amount.currency, available=-seller_share.minor, now=now,
        details={"payment_order_id": order_id, "gross_minor": amount.minor, "net_minor": seller_share.minor,
                 "timing": "released"})


def refund_after_transfer(seller: str, order_id: str, refund_id: str, amount: Money, owed: Money, now: str,
                          table: WalletTable | None = None) -> bool:
    """`owed`: the seller's share when its reversal was refused, zero when the reversal took it back."""
    return (table or WalletTable.from_settings()).apply_movement_parts(
        seller, REFUND, refund_id, amount.currency, [(owed_shard_reference(seller), {"owed": owed.minor})],
        now=now, details={"payment_order_id": order_id, "gross_minor": amount.minor, "net_minor": owed.minor,
                          "timing": "transferred"})


def netting(seller: str, order_id: str, amount: Money, now: str, table: WalletTable | None = None) -> bool:
    """A zero netting is still written (it is the transfer's decision) but leaves the seller's one owed shard
    alone: a hot seller's transfers must not all write the same item."""
    parts = [(order_id, {"available": -amount.minor})]
    parts += [(owed_shard_reference(seller), {"owed": -amount.minor})] if amount.minor else []
    return (table or WalletTable.from_settings()).apply_movement_parts(
        seller, NETTING, order_id, amount.currency, parts,
        now=now, details={"payment_order_id": order_id, "net_minor": amount.minor})


def owed(seller: str, currency: str, table: WalletTable | None = None) -> int:
    """What the seller owes in `currency` (its owed shard, read consistently)."""
    return (table or WalletTable.from_settings()).shard_balance(seller, owed_shard_reference(seller), currency)["owed"]
