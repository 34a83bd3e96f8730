"""Issue [pay-in] §6: the real state-machine definition on moto, handlers in-process, 200 checkouts of 2-3
orders with about 10% declines and every SQS message delivered twice; then invariants 1, 3, 4, 5 and 6,
verified against the PSP sandbox's own records and the tables."""

from collections import defaultdict

import boto3
import pytest

from tests.e2e.conftest import start_stack
from verification.driver import place_all, watch_until_settled
from verification.invariants import check, collect, report
from verification.storefront import ApiClient, make_checkouts

pytestmark = pytest.mark.xdist_group("e2e")


@pytest.fixture(scope="module")
def doubled_stack():
    stack = start_stack()
    stack.events.duplicate_delivery = True  # every SQS message reaches its function twice
    yield stack
    stack.stop()


def test_200_checkouts_with_declines_and_duplicate_deliveries_keep_every_invariant(doubled_stack):
    stack = doubled_stack
    workload = make_checkouts(200, seed=2, decline_rate=0.1, prefix="sim")
    record = place_all(ApiClient(stack.api_url, stack.api_key), workload, seed=2, replay_rate=0.1, conflict_rate=0.05)
    assert record.rejected == []
    session = boto3.session.Session(region_name="us-east-1")
    aws = type("Aws", (), {"client": staticmethod(lambda name: session.client(name, endpoint_url=stack.aws_url))})
    orders = watch_until_settled(aws, stack.outputs, record.accepted_order_ids, record, timeout_s=240)

    statuses = [o["payment_order_status"] for o in orders.values()]
    assert len(statuses) == len(workload.order_ids) and set(statuses) <= {"SUCCESS", "FAILED"}
    failed = statuses.count("FAILED") / len(statuses)
    assert 0.03 < failed < 0.25, failed  # declines happened, and were the only failures
    snapshot = collect(aws, stack.outputs, stack.sandbox.charges(), observed_statuses=record.observed_statuses,
                       replays=record.replays, unreadable_after_write=record.unreadable_after_write,
                       accepted_order_ids=record.accepted_order_ids)
    results = {r.number: r for r in check(snapshot)}
    print(report(list(results.values())))
    # Invariant 1 of verification/invariants.py still counts one PaymentIntent per order (issue 20 point 9
    # moves it to charges); until then the charge-level form is checked here.
    for number in (2, 3, 4, 5, 6, 7):
        assert results[number].ok, (number, results[number].violations[:5])
    assert one_charge_per_checkout_and_currency(list(orders.values()), stack.sandbox.charges()) == []
    assert any(r["kind"] == "same" for r in record.replays) and any(r["kind"] == "conflict" for r in record.replays)
    # the duplicate deliveries really happened: twice as many starter invocations carried each message
    starter_calls = [i for i in stack.runtime.invocations if "OrderStarter" in i.function_name]
    assert len(starter_calls) >= 2
    assert all(o["is_payment_done"] for o in [stack_checkout(aws, stack, c["checkout_id"])
                                              for c in workload.checkouts[:20]])


def one_charge_per_checkout_and_currency(orders, psp_charges):
    """At most one successful PSP charge per (checkout, currency), for exactly the sum of its orders, and an
    order is SUCCESS iff its charge succeeded (then it names that PaymentIntent)."""
    succeeded = defaultdict(list)
    for charge in psp_charges:
        if charge["status"] == "succeeded":
            succeeded[charge["metadata"]["charge_key"]].append(charge)
    by_charge = defaultdict(list)
    for order in orders:
        by_charge[f"{order['checkout_id']}#{order['currency']}"].append(order)
    violations = [f"{key}: {len(found)} successful charges" for key, found in succeeded.items() if len(found) > 1]
    for key, members in by_charge.items():
        found = succeeded.get(key, [])
        statuses = {o["payment_order_status"] for o in members}
        if found and (found[0]["amount"] != sum(o["amount_minor"] for o in members) or statuses != {"SUCCESS"}
                      or {o.get("psp_reference") for o in members} != {found[0]["payment_intent"]}):
            violations.append(f"{key}: charged {found[0]['amount']}, orders {sorted(statuses)}")
        if not found and "SUCCESS" in statuses:
            violations.append(f"{key}: SUCCESS without a successful charge")
    return violations


def stack_checkout(aws, stack, checkout_id):
    from functions.shared.tables import from_item

    item = aws.client("dynamodb").get_item(TableName=stack.outputs["PaymentEventsTableName"],
                                           Key={"checkout_id": {"S": checkout_id}}, ConsistentRead=True)["Item"]
    return from_item(item)
