"""The sharded wallet on moto: each movement once, balances exact over the shards, statements in order, and a
bucket that cannot cover a movement refused loudly."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.ledger import journal
from functions.shared.errors import LedgerConflict
from functions.shared.money import Money
from functions.shared.tables import WALLET_SHARDS, InsufficientBucket, WalletTable, wallet_shard
from functions.wallet import movements

T0 = "2026-12-04T10:00:00.000000+00:00"


def at(second: int) -> str:
    return f"2026-12-04T10:{second // 60:02d}:{second % 60:02d}.000000+00:00"


@pytest.fixture
def wallet(aws_env):
    return WalletTable.from_settings()


def usd(minor: int) -> Money:
    return Money(minor, "USD")


def test_a_movement_applies_once_and_the_second_time_changes_nothing(wallet):
    # Given a pay-in credited once
    assert movements.credit_pending("s1", "po_1", usd(1234), T0, wallet) is True
    before = wallet.balances("s1")
    # When it is applied again (a retried task)
    assert movements.credit_pending("s1", "po_1", usd(1234), at(5), wallet) is False
    # Then nothing changed, and the guard is the one movement item
    assert wallet.balances("s1") == before == {
        "USD": {"pending_minor": 1234, "available_minor": 0, "transferred_minor": 0, "owed_minor": 0}}
    move = wallet.get_movement("payin", "po_1")
    assert (move["created_at"], move["pending_delta"], move["statement_key"]) == (
        T0, 1234, f"s1#{wallet_shard('po_1')}")


def test_release_and_transfer_move_the_order_through_the_buckets_each_once(wallet):
    movements.credit_pending("s1", "po_1", usd(1000), at(0), wallet)
    for _ in range(2):
        movements.release("s1", "po_1", usd(1000), usd(150), at(1), wallet)
    assert wallet.balances("s1")["USD"] == {
        "pending_minor": 0, "available_minor": 850, "transferred_minor": 0, "owed_minor": 0}
    assert movements.transfer_out("s1", "po_1", usd(850), "tr_1", at(2), wallet) is True
    assert movements.transfer_out("s1", "po_1", usd(850), "tr_1", at(3), wallet) is False
    assert wallet.balances("s1")["USD"] == {
        "pending_minor": 0, "available_minor": 0, "transferred_minor": 850, "owed_minor": 0}
    release = wallet.get_movement("release", "po_1")
    assert (release["gross_minor"], release["commission_minor"], release["net_minor"]) == (1000, 150, 850)
    assert wallet.get_movement("transfer", "po_1")["transfer_id"] == "tr_1"


def test_a_bucket_that_cannot_cover_a_movement_refuses_it_and_writes_nothing(wallet):
    # A release before its pay-in: the shard has no pending at all
    with pytest.raises(InsufficientBucket):
        movements.release("s1", "po_1", usd(1000), usd(0), at(0), wallet)
    assert wallet.balances("s1") == {} and wallet.get_movement("release", "po_1") is None
    # A transfer of more than the shard holds available
    movements.credit_pending("s1", "po_1", usd(1000), at(1), wallet)
    movements.release("s1", "po_1", usd(1000), usd(100), at(2), wallet)
    with pytest.raises(InsufficientBucket):
        movements.transfer_out("s1", "po_1", usd(901), "tr_1", at(3), wallet)
    assert wallet.balances("s1")["USD"]["available_minor"] == 900
    assert wallet.get_movement("transfer", "po_1") is None
    # The right amount goes through; repeated, it is "applied before", not a refusal
    assert movements.transfer_out("s1", "po_1", usd(900), "tr_1", at(4), wallet) is True
    assert movements.transfer_out("s1", "po_1", usd(900), "tr_1", at(5), wallet) is False


def test_another_shards_money_does_not_cover_a_movement(wallet):
    other = next(f"po_{n}" for n in range(2, 500) if wallet_shard(f"po_{n}") != wallet_shard("po_1"))
    movements.credit_pending("s1", other, usd(5000), at(0), wallet)
    with pytest.raises(InsufficientBucket):
        movements.release("s1", "po_1", usd(10), usd(0), at(1), wallet)


def test_concurrent_movements_on_one_shard_all_apply_and_a_raced_one_applies_once(wallet):
    shard = wallet_shard("po_0")
    same_shard = [f"po_{n}" for n in range(3000) if wallet_shard(f"po_{n}") == shard][:40]
    with ThreadPoolExecutor(max_workers=8) as pool:
        applied = list(pool.map(lambda order: movements.credit_pending("s1", order, usd(100), at(0), wallet),
                                same_shard + same_shard[:10]))
    assert sum(applied) == 40
    items = [i for i in wallet.scan() if i["account_id"].startswith("s1#")]
    assert [(i["account_id"], i["pending_minor"]) for i in items] == [(f"s1#{shard}", 4000)]


def test_balances_are_exact_over_the_shards_and_per_currency(wallet):
    rng = random.Random(7)
    expected = {"USD": [0, 0, 0], "JPY": [0, 0, 0]}  # pending, available, transferred
    for n in range(300):
        currency, gross = rng.choice(["USD", "JPY"]), rng.randint(1, 99_999)
        commission = gross * rng.randint(0, 10_000) // 10_000
        order = f"po_{n}"
        movements.credit_pending("seller_hot", order, Money(gross, currency), at(n % 60), wallet)
        expected[currency][0] += gross
        if n % 3:
            movements.release("seller_hot", order, Money(gross, currency), Money(commission, currency), at(1),
                              wallet)
            expected[currency][0] -= gross
            expected[currency][1] += gross - commission
            if n % 3 == 2 and gross > commission:
                movements.transfer_out("seller_hot", order, Money(gross - commission, currency), f"tr_{n}", at(2),
                                       wallet)
                expected[currency][1] -= gross - commission
                expected[currency][2] += gross - commission
    movements.credit_pending("someone_else", "po_x", usd(7), at(0), wallet)
    shards = {i["account_id"] for i in wallet.scan() if i["account_id"].startswith("seller_hot#")}
    assert len(shards) > WALLET_SHARDS // 2  # spread, not one item
    assert wallet.balances("seller_hot") == {
        currency: {"pending_minor": p, "available_minor": a, "transferred_minor": t, "owed_minor": 0}
        for currency, (p, a, t) in expected.items()}


def test_movements_are_ordered_and_bounded_by_start_inclusive_end_exclusive(wallet):
    orders = [f"po_{n}" for n in range(40)]
    for second, order in reversed(list(enumerate(orders))):
        movements.credit_pending("s1", order, usd(100 + second), at(second), wallet)
    movements.release("s1", "po_3", usd(103), usd(3), at(35), wallet)
    movements.credit_pending("s2", "po_other", usd(1), at(12), wallet)
    found = wallet.movements("s1", at(10), at(36))
    assert [(m["created_at"], m["kind"], m["reference"]) for m in found] == (
        [(at(s), "payin", f"po_{s}") for s in range(10, 36)] + [(at(35), "release", "po_3")])
    assert found[-1]["net_minor"] == 100 and all(m["seller_account"] == "s1" for m in found)
    assert wallet.movements("s1", at(36), at(40))[0]["reference"] == "po_36"
    assert wallet.movements("s1", at(50), at(59)) == [] == wallet.movements("s1", at(20), at(20))


def test_the_ledger_refuses_a_second_transfer_id_for_one_order(aws_env):
    assert journal.record(journal.transfer("po_1", "s1", usd(900), "stripe", "tr_1")) is True
    assert journal.record(journal.transfer("po_1", "s1", usd(900), "stripe", "tr_1")) is False
    with pytest.raises(LedgerConflict):
        journal.record(journal.transfer("po_1", "s1", usd(900), "stripe", "tr_2"))
