"""The benchmark's fake store answers as the adapter's projected reads do, and cannot drift from them."""

from __future__ import annotations

import pytest

from benchmarks import recon_bench
from functions.recon import matching


def test_the_fake_answers_with_the_projection_of_the_stored_records() -> None:
    store = recon_bench.FakeStore(2000)
    whole = recon_bench.stored_order(1005, 2000)  # EXECUTING: no pay-in
    assert store.orders(["po_00001005", "po_x"]) == {
        "po_00001005": recon_bench.projected(whole, matching.ORDER_ATTRIBUTES)}
    assert set(whole) - set(matching.ORDER_ATTRIBUTES)  # the projection leaves attributes out
    assert store.payins(["po_00001005", "po_00001006", "po_x"]) == {"po_00001006"}
    # only ids exactly `po_<8 digits>` below the number of orders are ours
    odd = ["", "po_", "po_x0000001", "po_0000000a", "po_ 0000001", "po_000000001", "po_-0000001", "pi_00000001",
           "po_00002000", "po_0000001", "po_٠٠٠٠٠٠٠١"]
    assert store.orders(odd) == {} and store.payins(odd) == set()
    assert set(store.orders(["po_00001999", *odd])) == store.payins(["po_00001999", *odd]) == {"po_00001999"}
    assert store.transactions(["refund#re_00000010", "refund#re_00000011"]) == {
        "refund#re_00000010": recon_bench.projected(recon_bench.stored_transaction("refund#re_00000010", 2000),
                                                    matching.ROW_TRANSACTION_ATTRIBUTES)}
    assert store.window_orders(["po_00001005"]) == {
        "po_00001005": recon_bench.projected(whole, matching.WINDOW_ORDER_ATTRIBUTES)}
    assert len(list(store.all_orders())) == 2000
    created = sorted(recon_bench.stored_order(i, 2000)["created_at"] for i in range(2000))
    assert len(list(store.created_between(created[100], created[1900]))) == sum(
        created[100] <= moment < created[1900] for moment in created)
    assert store.order_ids_by_reference({"pi_00000007", "pi_x"}) == {"pi_00000007": "po_00000007"}


@pytest.mark.parametrize(("name", "extra"), [("ORDER_ATTRIBUTES", "checkout_id"),
                                             ("WINDOW_ORDER_ATTRIBUTES", "seller_account"),
                                             ("ROW_TRANSACTION_ATTRIBUTES", "kind")])
def test_a_projection_the_fake_does_not_follow_stops_the_benchmark(monkeypatch: pytest.MonkeyPatch, name: str,
                                                                   extra: str) -> None:
    recon_bench.FakeStore(2000)
    monkeypatch.setattr(matching, name, (*getattr(matching, name), extra))
    with pytest.raises(AssertionError):
        recon_bench.FakeStore(2000)
