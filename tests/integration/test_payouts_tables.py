"""PayoutsTable and SellersTable on moto: every status move, run twice, and the races between them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.shared.status import PAYOUT_ALLOWED_FROM, PayoutStatus
from functions.shared.tables import PayoutsTable, SellersTable, created_bucket, sweep_shard

T0 = "2026-12-04T10:00:00.000Z"
T1 = "2026-12-04T10:01:00.000Z"
T2 = "2026-12-04T10:02:00.000Z"
LATER = "2026-12-05T10:00:00.000Z"


def held(order_id: str = "po_1", seller: str = "seller_a", **extra) -> dict:
    return {"payment_order_id": order_id, "seller_account": seller, "checkout_id": "chk_1", "currency": "USD",
            "gross_minor": 1000, "psp": "stripe", "charge_id": "ch_1", "settled_at": T0, **extra}


@pytest.fixture
def payouts(aws_env) -> PayoutsTable:
    return PayoutsTable.from_settings()


def released(payouts: PayoutsTable, order_id: str = "po_1", **extra) -> dict:
    payouts.create_held([held(order_id, **extra)])
    item = payouts.release(order_id, 1000, 100, 900, T1, T1)
    assert item is not None
    return item


def transferring(payouts: PayoutsTable, order_id: str = "po_1") -> dict:
    released(payouts, order_id)
    item = payouts.begin_transfer(order_id, T1, T2)
    assert item is not None
    return item


def due(payouts: PayoutsTable, order_id: str, now: str = LATER) -> bool:
    return order_id in payouts.due_payouts(sweep_shard(order_id, payouts.shards), now)


# --- creation ------------------------------------------------------------------------------------------------


def test_create_held_is_put_if_new_and_due_only_with_an_auto_release(payouts):
    assert payouts.create_held([held("po_1"), held("po_2", auto_release_at=T2)]) == ["po_1", "po_2"]
    assert payouts.create_held([held("po_1", gross_minor=5), held("po_2")]) == []  # twice: nothing changes
    first = payouts.get("po_1")
    assert first["payout_status"] == "HELD" and first["gross_minor"] == 1000 and "due_at" not in first
    assert payouts.get("po_2")["due_at"] == T2
    assert not due(payouts, "po_1") and due(payouts, "po_2") and not due(payouts, "po_2", T1)
    assert set(payouts.get_many(["po_1", "po_2", "nope"], ["payment_order_id", "payout_status"])) == {"po_1", "po_2"}


# --- release -------------------------------------------------------------------------------------------------


def test_release_freezes_the_commission_once(payouts):
    item = released(payouts)
    assert (item["payout_status"], item["commission_bps"], item["commission_minor"], item["net_minor"]) == (
        "RELEASED", 1000, 100, 900)
    assert item["release_applied"] is False and item["released_at"] == T1 and due(payouts, "po_1")
    assert payouts.release("po_1", 0, 0, 1000, T2, T2) is None  # twice: refused, the first terms stay
    assert payouts.get("po_1")["commission_minor"] == 100
    assert payouts.mark_release_applied("po_1", T2) and payouts.mark_release_applied("po_1", T2)
    assert payouts.get("po_1")["release_applied"] is True


def test_release_of_an_unknown_payout_creates_nothing(payouts):
    assert payouts.release("nope", 0, 0, 1, T1, T1) is None
    assert payouts.get("nope") is None
    assert payouts.mark_release_applied("nope", T1) is False
    assert payouts.get("nope") is None


def test_concurrent_releases_have_exactly_one_winner(payouts):
    payouts.create_held([held()])
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda bps: payouts.release("po_1", bps, bps // 10, 1000 - bps // 10, T1, T1),
                                range(0, 800, 100)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert payouts.get("po_1")["commission_bps"] == winners[0]["commission_bps"]


# --- transfer ------------------------------------------------------------------------------------------------


def test_begin_transfer_counts_attempts_and_keeps_the_first_time(payouts):
    assert payouts.begin_transfer("po_1", T1, T2) is None  # no pay-out
    payouts.create_held([held()])
    assert payouts.begin_transfer("po_1", T1, T2) is None  # HELD: not released yet
    released(payouts, "po_2")
    first = payouts.begin_transfer("po_2", T1, T2)
    second = payouts.begin_transfer("po_2", T2, LATER)
    assert (first["transfer_attempts"], second["transfer_attempts"]) == (1, 2)
    assert second["payout_status"] == "TRANSFERRING" and second["first_transfer_at"] == T1
    assert second["due_at"] == LATER


def test_finish_transfer_is_final_out_of_the_sweep_and_in_recon_window(payouts):
    transferring(payouts)
    assert payouts.record_transfer_id("po_1", "tr_1", T1)
    assert payouts.record_transfer_id("po_1", "tr_1", T1)  # the same id again: fine
    assert not payouts.record_transfer_id("po_1", "tr_other", T1)  # never replaced
    assert payouts.finish_transfer("po_1", "tr_1", T2)
    assert not payouts.finish_transfer("po_1", "tr_1", T2)  # twice: no move
    item = payouts.get("po_1")
    assert (item["payout_status"], item["transfer_id"], item["transferred_at"]) == ("TRANSFERRED", "tr_1", T2)
    assert item["transferred_bucket"] == created_bucket("po_1", T2)
    assert "due_at" not in item and "sweep_shard" not in item and not due(payouts, "po_1")
    assert payouts.transferred_between(created_bucket("po_1", T2), T0, LATER) == ["po_1"]
    assert payouts.transferred_between(created_bucket("po_1", T2), T0, T2) == []  # end excluded
    # nothing moves a final pay-out
    assert payouts.begin_transfer("po_1", LATER, LATER) is None
    assert not payouts.fail_transfer("po_1", "account_invalid", "x", LATER)
    assert not payouts.postpone("po_1", LATER, LATER, "x")
    assert not payouts.retry_failed("po_1", LATER)
    assert payouts.get("po_1")["payout_status"] == "TRANSFERRED"


def test_finish_transfer_refuses_another_transfer_id(payouts):
    transferring(payouts)
    payouts.record_transfer_id("po_1", "tr_1", T1)
    assert not payouts.finish_transfer("po_1", "tr_2", T2)
    assert payouts.get("po_1")["payout_status"] == "TRANSFERRING"


def test_fail_then_the_explicit_retry_is_the_only_move_back(payouts):
    transferring(payouts)
    assert payouts.fail_transfer("po_1", "account_invalid", "the account is restricted", T2)
    assert not payouts.fail_transfer("po_1", "account_invalid", "again", T2)  # twice: no move
    failed = payouts.get("po_1")
    assert (failed["payout_status"], failed["payout_failure_code"]) == ("FAILED", "account_invalid")
    assert not due(payouts, "po_1")
    assert payouts.begin_transfer("po_1", T2, T2) is None  # FAILED stays FAILED for the worker
    assert payouts.retry_failed("po_1", LATER)
    assert not payouts.retry_failed("po_1", LATER)  # twice: no move
    item = payouts.get("po_1")
    assert item["payout_status"] == "RELEASED" and "payout_failure_reason" not in item and due(payouts, "po_1")


def test_postpone_keeps_the_status_and_moves_the_due_time(payouts):
    transferring(payouts)
    assert payouts.postpone("po_1", LATER, T2, "balance_insufficient")
    item = payouts.get("po_1")
    assert (item["payout_status"], item["due_at"]) == ("TRANSFERRING", LATER)
    assert item["last_error"] == "balance_insufficient"
    assert not due(payouts, "po_1", T2) and due(payouts, "po_1", LATER)
    assert not payouts.postpone("nope", LATER, T2, "x")


def test_mark_dead_lettered_only_if_nobody_moved_the_due_time(payouts):
    transferring(payouts)
    assert not payouts.mark_dead_lettered("po_1", T1, "stuck", T2)  # read before a new due_at: refused
    assert payouts.mark_dead_lettered("po_1", T2, "stuck", T2)
    item = payouts.get("po_1")
    assert item["dead_letter_reason"] == "stuck" and not due(payouts, "po_1")


def test_due_payouts_stops_at_max_items(payouts):
    ids = [f"po_{n}" for n in range(40)]
    payouts.create_held([held(i, auto_release_at=T1) for i in ids])
    found = [i for shard in range(payouts.shards) for i in payouts.due_payouts(str(shard), T2, max_items=1)]
    assert set(found) <= set(ids) and len(found) == len({sweep_shard(i, payouts.shards) for i in ids})


# --- waiting for the seller's account ------------------------------------------------------------------------


def test_a_registration_wakes_exactly_the_sellers_waiting_payouts(payouts):
    released(payouts, "po_1")
    released(payouts, "po_2")
    released(payouts, "po_3", seller="seller_b")
    for order_id, seller in (("po_1", "seller_a"), ("po_2", "seller_a"), ("po_3", "seller_b")):
        assert payouts.await_seller(order_id, seller, LATER, T1)
    assert not payouts.await_seller("nope", "seller_a", LATER, T1)
    assert sorted(payouts.wake_awaiting("seller_a", T2)) == ["po_1", "po_2"]
    assert payouts.wake_awaiting("seller_a", T2) == []  # twice: nothing left
    woken = payouts.get("po_1")
    assert "awaiting_seller" not in woken and woken["due_at"] == T2 and due(payouts, "po_1", T2)
    assert payouts.get("po_3")["awaiting_seller"] == "seller_b"


def test_wake_awaiting_stops_at_its_limit(payouts):
    for n in range(3):
        released(payouts, f"po_{n}")
        payouts.await_seller(f"po_{n}", "seller_a", LATER, T1)
    assert len(payouts.wake_awaiting("seller_a", T2, limit=2)) == 2
    assert len(payouts.wake_awaiting("seller_a", T2)) == 1


# --- the transition table ------------------------------------------------------------------------------------


def test_no_status_move_goes_backwards():
    order = list(PayoutStatus)
    for target, sources in PAYOUT_ALLOWED_FROM.items():
        assert all(order.index(source) <= order.index(target) for source in sources), target
    assert PayoutStatus.RELEASED not in PAYOUT_ALLOWED_FROM[PayoutStatus.HELD]
    assert PayoutStatus.FAILED not in PAYOUT_ALLOWED_FROM[PayoutStatus.RELEASED]


# --- sellers -------------------------------------------------------------------------------------------------


def test_seller_put_creates_then_replaces_and_keeps_created_at(aws_env):
    sellers = SellersTable.from_settings()
    first = sellers.put("seller_a", commission_bps=1000, psp_account_id="acct_1", auto_release_days=7, now=T0)
    assert first == {"seller_account": "seller_a", "commission_bps": 1000, "psp_account_id": "acct_1",
                     "auto_release_days": 7, "created_at": T0, "updated_at": T0}
    second = sellers.put("seller_a", commission_bps=500, now=T1)  # PUT: left-out fields are removed
    assert second == {"seller_account": "seller_a", "commission_bps": 500, "created_at": T0, "updated_at": T1}
    assert sellers.get("seller_a") == second and sellers.get("nope") is None
    assert set(sellers.get_many(["seller_a", "nope"])) == {"seller_a"}
