"""The benchmark's fake store answers as the adapter's projected reads do, and cannot drift from them."""

from __future__ import annotations

import pytest

from benchmarks import recon_bench
from functions.recon import ports
from functions.recon.adapters import listing


def test_the_fake_answers_with_the_projection_of_the_stored_records() -> None:
    store = recon_bench.FakeStore(2000)
    assert store.n == recon_bench.first_order(2000) == 4000  # two orders a checkout on average
    # checkout 1005 % 1000 == 5: EXECUTING, its order without a pay-in; 1006: 5 orders, the last one in EUR
    executing = recon_bench.first_order(1005)
    whole = recon_bench.stored_order(executing, 2000)
    assert whole["checkout_id"] == "co_00001005" and whole["payment_order_status"] == "EXECUTING"
    assert store.orders([f"po_{executing:08d}", "po_x"]) == {
        f"po_{executing:08d}": recon_bench.projected(whole, ports.ORDER_ATTRIBUTES)}
    assert set(whole) - set(ports.ORDER_ATTRIBUTES)  # the projection leaves attributes out
    assert store.payins([f"po_{executing:08d}", f"po_{executing + 1:08d}", "po_x"]) == {f"po_{executing + 1:08d}"}
    for c in (6, 13, 999):
        assert store.checkout_orders([f"co_{c:08d}", "co_x"]) == {
            f"co_{c:08d}": listing(recon_bench.stored_event(c)["payment_orders"])}
    assert list(store.checkout_orders(["co_00000006"])["co_00000006"]) == ["USD", "EUR"]
    assert store.checkout_orders(["co_00000013"])["co_00000013"]["USD"][-1] == "po_m00000013"  # the lost order
    # only ids exactly `po_<8 digits>` below the number of orders are ours
    odd = ["", "po_", "po_x0000001", "po_0000000a", "po_ 0000001", "po_000000001", "po_-0000001", "pi_00000001",
           "po_00004000", "po_0000001", "po_٠٠٠٠٠٠٠١"]
    assert store.orders(odd) == {} and store.payins(odd) == set()
    assert set(store.orders(["po_00003999", *odd])) == store.payins(["po_00003999", *odd]) == {"po_00003999"}
    assert store.transactions(["refund#re_00000010", "refund#re_00000030"]) == {
        "refund#re_00000010": recon_bench.projected(recon_bench.stored_transaction("refund#re_00000010", 2000),
                                                    ports.ROW_TRANSACTION_ATTRIBUTES)}
    assert store.window_orders([f"po_{executing:08d}"]) == {
        f"po_{executing:08d}": recon_bench.projected(whole, ports.WINDOW_ORDER_ATTRIBUTES)}
    assert len(list(store.all_orders())) == 4000
    assert len(list(store.all_events())) == 4000 + 2  # and the lost orders of checkouts 13 and 1013
    created = sorted(recon_bench.stored_order(i, 2000)["created_at"] for i in range(4000))
    assert len(list(store.created_between(created[100], created[3900]))) == sum(
        created[100] <= moment < created[3900] for moment in created)
    six = recon_bench.first_order(6)
    assert store.order_ids_by_reference({"pi_00000006", "pi_00000006e", "pi_00000007e", "pi_x"}) == {
        "pi_00000006": f"po_{six:08d}", "pi_00000006e": f"po_{six + 4:08d}"}


@pytest.mark.parametrize(("name", "extra"), [("ORDER_ATTRIBUTES", "checkout_id"),
                                             ("WINDOW_ORDER_ATTRIBUTES", "seller_account"),
                                             ("ROW_TRANSACTION_ATTRIBUTES", "kind")])
def test_a_projection_the_fake_does_not_follow_stops_the_benchmark(monkeypatch: pytest.MonkeyPatch, name: str,
                                                                   extra: str) -> None:
    recon_bench.FakeStore(1000)
    monkeypatch.setattr(ports, name, (*getattr(ports, name), extra))
    with pytest.raises(AssertionError):
        recon_bench.FakeStore(1000)
