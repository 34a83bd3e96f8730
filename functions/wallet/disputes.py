"""The wallet side of a dispute (docs/decisions.md "Disputes"), each movement once under its part's reference
(`<dispute_id>:<payment_order_id>`); the ledger's twin is functions/ledger/disputes.py.

Held (the order not transferred when the dispute opened): no movement at open (the pay-out is blocked from
transfer instead); lost: pending -part (still HELD) or available -seller share (released), on the order's shard.
Transferred: opened -> owed +seller share (the seller's owed shard: netted from its next transfers like a
refund's share, functions/executor/netting.py); won -> owed -what is still owed, available +the rest (what
netting took meanwhile, given back to the seller's available on the owed shard).
"""

from __future__ import annotations

from functions.shared.money import Money
from functions.shared.names import DISPUTE, DISPUTE_LOST, DISPUTE_WON, dispute_part_reference, owed_shard_reference
from functions.shared.tables import WalletTable


def opened_transferred(seller: str, dispute_id: str, order_id: str, share: Money, now: str,
                       table: WalletTable | None = None) -> bool:
    return (table or WalletTable.from_settings()).apply_movement_parts(
        seller, DISPUTE, dispute_part_reference(dispute_id, order_id), share.currency,
        [(owed_shard_reference(seller), {"owed": share.minor})], now=now,
        details={"payment_order_id": order_id, "dispute_id": dispute_id, "net_minor": share.minor,
                 "timing": "transferred"})


def won_transferred(seller: str, dispute_id: str, order_id: str, owed_back: Money, credited: Money, now: str,
                    table: WalletTable | None = None) -> bool:
    return (table or WalletTable.from_settings()).apply_movement_parts(
        seller, DISPUTE_WON, dispute_part_reference(dispute_id, order_id), owed_back.currency,
        [(owed_shard_reference(seller), {"owed": -owed_back.minor, "available": credited.minor})], now=now,
        details={"payment_order_id": order_id, "dispute_id": dispute_id, "timing": "transferred"})


def lost_held(seller: str, dispute_id: str, order_id: str, amount: Money, now: str,
              table: WalletTable | None = None) -> bool:
    return (table or WalletTable.from_settings()).apply_movement(
        seller, DISPUTE_LOST, dispute_part_reference(dispute_id, order_id), amount.currency, pending=-amount.minor,
        now=now, details={"payment_order_id": order_id, "dispute_id": dispute_id, "gross_minor": amount.minor,
                          "timing": "held"})


def lost_released(seller: str, dispute_id: str, order_id: str, share: Money, now: str,
                  table: WalletTable | None = None) -> bool:
    return (table or WalletTable.from_settings()).apply_movement(
        seller, DISPUTE_LOST, dispute_part_reference(dispute_id, order_id), share.currency, available=-share.minor,
        now=now, details={"payment_order_id": order_id, "dispute_id": dispute_id, "net_minor": share.minor,
                          "timing": "released"})
