"""benchmarks/hot_seller.py: its stand-in keeps the write path's guards, and its figures are arithmetic that can
miss the target (one shard for a hot seller does)."""

from __future__ import annotations

import pytest

from benchmarks import hot_seller
from functions.shared.money import Money
from functions.shared.tables import InsufficientBucket
from functions.wallet import movements


def test_the_stand_in_applies_a_movement_once_and_refuses_an_uncovered_one():
    db = hot_seller.CountingDynamo()
    wallet = hot_seller._CountingWallet("Wallet")
    wallet.db = db
    now = "2026-12-04T10:00:00.000000+00:00"
    assert movements.credit_pending("s", "po_1", Money(1000, "USD"), now, wallet) is True
    assert movements.credit_pending("s", "po_1", Money(1000, "USD"), now, wallet) is False
    assert sum(db.item_writes.values()) == 2 and db.units == 2 * 2 + 1  # guard, balance (transactional), index
    with pytest.raises(InsufficientBucket):
        movements.release("s", "po_1", Money(1001, "USD"), Money(0, "USD"), now, wallet)
    assert movements.release("s", "po_1", Money(1000, "USD"), Money(100, "USD"), now, wallet) is True
    balance = next(item for key, item in db.items.items() if key[-1] == "BALANCE#USD")
    assert (balance["pending_minor"], balance["available_minor"]) == ({"N": "0"}, {"N": "900"})


def test_32_shards_keep_a_hot_seller_under_the_target_and_an_order_costs_21_write_units():
    figures = hot_seller.run(seconds=3, rate=5000, release_after_s=1, transfer_after_s=1)
    assert 3 * 5000 / 32 * 0.8 < figures.max_item_writes_per_s <= hot_seller.TARGET_ITEM_WRITES_PER_S
    # per movement: guard + balance in a transaction (2 + 2) and the statement index (1); per transaction of the
    # ledger: the item (1) and its order index (1); three steps
    assert figures.write_units_per_order == 3 * (2 + 2 + 1) + 3 * (1 + 1)
    assert set(figures.driven) == {"payin", "release", "transfer"}


def test_one_shard_misses_the_target_by_exactly_its_movements_per_second():
    figures = hot_seller.run(seconds=2, rate=2000, release_after_s=1, transfer_after_s=5, shards=1)
    # second 1: 2,000 pay-ins and 2,000 releases on the one balance item
    assert figures.max_item_writes_per_s == 4000 > hot_seller.TARGET_ITEM_WRITES_PER_S
    assert figures.hottest_item == ("Wallet", "seller_hot#0", "BALANCE#USD")
