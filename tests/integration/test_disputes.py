"""Disputes against the PSP sandbox and moto: opened while held -> won (the transfer waits, then sends all);
opened while held -> lost (the part leaves the pay-out); opened after the transfer -> owed -> lost -> netted from
the next transfer; won after the transfer; the same event twice and out of order; wallet = ledger throughout."""

import json

import boto3

from functions.disputes import service
from functions.executor import transfer
from functions.ledger import disputes as ledger_disputes
from functions.payment import service as payment_service
from functions.shared import clock
from functions.shared.config import settings
from functions.shared.tables import DisputesTable, LedgerTable, PaymentTables, PayoutsTable, WalletTable
from functions.webhooks import processor
from psp_sandbox.disputes import close_dispute, open_dispute
from tests.integration.test_refunds import usd
from tests.integration.test_transfer import SELLER, paid_order, registered, released
from verification import invariants
from verification.invariants import Snapshot


def snapshot():
    return Snapshot(orders=list(PaymentTables.from_settings().scan_orders()),
                    ledger=list(LedgerTable.from_settings().scan()), wallet=list(WalletTable.from_settings().scan()),
                    psp_charges=[], disputes=list(DisputesTable.from_settings().scan()))


def invariants_hold():
    """Wallet = ledger per bucket, every transaction balanced, every dispute's steps booked."""
    snap = snapshot()
    assert invariants._wallet_matches_ledger(snap) == []
    assert invariants._ledger_balances(snap) == []
    assert invariants._disputes_booked(snap) == []


def charge_of(sandbox, order_id):
    """The order's charge; its PaymentIntent recorded as finalize records it (`psp_reference`, indexed)."""
    order = PaymentTables.from_settings().get_order(order_id)
    charge = sandbox.state.charges[order["charge_id"]]
    boto3.client("dynamodb", region_name="us-east-1").update_item(
        TableName=settings().payment_orders_table, Key={"payment_order_id": {"S": order_id}},
        UpdateExpression="SET psp_reference = :pi", ExpressionAttributeValues={":pi": {"S": charge.payment_intent}})
    return charge.id


def dispute(sandbox, order_id, amount=500):
    return open_dispute(sandbox.state, charge_of(sandbox, order_id), amount, "fraudulent")


def as_json(sandbox, dp):
    return sandbox.state.to_json(dp)


def event(obj, event_id, kind):
    return json.dumps({"id": event_id, "type": kind, "created": int(clock.now().timestamp()),
                       "data": {"object": obj}})


def ledger_ids():
    return {t["transaction_id"] for t in LedgerTable.from_settings().scan()}


def funds_open():
    """What the disputed_funds account holds (open disputes' parts not owed by sellers)."""
    return sum(e["amount_minor"] for t in LedgerTable.from_settings().scan() for e in t["entries"]
               if e["account"] == ledger_disputes.disputed_funds("stripe"))


def test_opened_while_held_then_won_blocks_the_transfer_then_sends_it_all(sandbox):
    registered(sandbox)
    order_id = paid_order()
    dp = dispute(sandbox, order_id)
    assert service.apply_psp_dispute(as_json(sandbox, dp)) == "open"

    item = DisputesTable.from_settings().get(dp.id)
    assert (item["dispute_status"], item["amount_minor"], item["fee_minor"]) == ("OPEN", 500, 1500)
    assert item["parts"][order_id]["timing"] == "held"
    assert PayoutsTable.from_settings().get(order_id)["dispute_holds"] == {dp.id}
    assert {f"dispute_fee#{dp.id}", f"dispute#{dp.id}:{order_id}"} <= ledger_ids()
    assert funds_open() == 500
    view = payment_service.get_order(order_id)
    assert [(d.dispute_id, d.status, d.amount) for d in view.disputes] == [(dp.id, "OPEN", "5.00")]
    assert payment_service.get_order(paid_order("chk_other")).disputes is None  # none: the answer as before
    released(order_id)
    assert transfer.drive(order_id) == "dispute_hold"
    assert PayoutsTable.from_settings().get(order_id)["payout_status"] == "RELEASED"
    invariants_hold()

    close_dispute(sandbox.state, dp.id, "won")
    assert service.apply_psp_dispute(as_json(sandbox, dp)) == "won"
    item = DisputesTable.from_settings().get(dp.id)
    assert item["dispute_status"] == "WON" and item["updated_at"] >= item["created_at"]
    assert "dispute_holds" not in PayoutsTable.from_settings().get(order_id)
    assert funds_open() == 0
    assert transfer.drive(order_id) == "transferred"
    assert usd()["transferred_minor"] == 1111  # the whole net: a won dispute takes nothing from the seller
    invariants_hold()


def test_opened_while_held_then_lost_takes_the_part_from_the_pay_out(sandbox):
    registered(sandbox)
    order_id = paid_order()
    dp = dispute(sandbox, order_id)
    service.apply_psp_dispute(as_json(sandbox, dp))
    close_dispute(sandbox.state, dp.id, "lost")
    assert service.apply_psp_dispute(as_json(sandbox, dp)) == "lost"

    payout = PayoutsTable.from_settings().get(order_id)
    assert (payout["gross_minor"], payout["dispute_lost_minor"], "dispute_holds" in payout) == (734, 500, False)
    assert usd()["pending_minor"] == 734
    assert funds_open() == 0
    released(order_id)
    assert transfer.drive(order_id) == "transferred"
    assert usd()["transferred_minor"] == 661
    invariants_hold()


def test_lost_after_the_release_takes_the_shares(sandbox):
    registered(sandbox)
    order_id = paid_order()
    payouts = PayoutsTable.from_settings()
    transfer.apply_release(released(order_id), clock.iso())  # the worker's first step, not yet its transfer
    payouts.mark_release_applied(order_id, clock.iso())
    dp = dispute(sandbox, order_id)
    service.apply_psp_dispute(as_json(sandbox, dp))
    close_dispute(sandbox.state, dp.id, "lost")
    assert service.apply_psp_dispute(as_json(sandbox, dp)) == "lost"
    part = DisputesTable.from_settings().get(dp.id)["parts"][order_id]
    assert (part["lost_timing"], part["lost_seller_share_minor"], part["lost_commission_share_minor"]) == (
        "released", 450, 50)
    assert payouts.get(order_id)["net_minor"] == 1111 - 450
    assert usd()["available_minor"] == 1111 - 450
    assert transfer.drive(order_id) == "transferred"
    invariants_hold()


def test_opened_after_the_transfer_the_seller_owes_its_share_netted_from_the_next_transfer(sandbox):
    registered(sandbox)
    first = paid_order("chk_d1")
    released(first)
    assert transfer.drive(first) == "transferred"
    dp = dispute(sandbox, first)
    service.apply_psp_dispute(as_json(sandbox, dp))
    part = DisputesTable.from_settings().get(dp.id)["parts"][first]
    assert (part["timing"], part["seller_share_minor"], part["commission_share_minor"]) == ("transferred", 450, 50)
    assert usd()["owed_minor"] == 450
    invariants_hold()

    close_dispute(sandbox.state, dp.id, "lost")
    assert service.apply_psp_dispute(as_json(sandbox, dp)) == "lost"
    assert funds_open() == 0
    second = paid_order("chk_d2", amount="20.00")
    released(second)
    assert transfer.drive(second) == "transferred"
    assert PayoutsTable.from_settings().get(second)["netted_minor"] == 450
    assert usd()["owed_minor"] == 0
    [sent] = [t for t in sandbox.state.transfers.values() if t.metadata["payment_order_id"] == second]
    assert sent.amount == 1800 - 450
    invariants_hold()


def test_won_after_the_transfer_gives_the_owed_back_and_credits_what_was_netted(sandbox):
    registered(sandbox)
    first = paid_order("chk_w1")
    released(first)
    transfer.drive(first)
    dp = dispute(sandbox, first)
    service.apply_psp_dispute(as_json(sandbox, dp))
    second = paid_order("chk_w2", amount="3.00")  # net 270: nets 270 of the 450 owed
    released(second)
    assert transfer.drive(second) == "transferred"
    assert usd()["owed_minor"] == 180
    close_dispute(sandbox.state, dp.id, "won")
    assert service.apply_psp_dispute(as_json(sandbox, dp)) == "won"
    balances = usd()
    assert (balances["owed_minor"], balances["available_minor"]) == (0, 270)
    assert funds_open() == 0
    invariants_hold()


def test_the_same_event_twice_and_out_of_order_change_nothing_twice(sandbox):
    registered(sandbox)
    order_id = paid_order()
    dp = dispute(sandbox, order_id)
    opened = as_json(sandbox, dp)
    close_dispute(sandbox.state, dp.id, "lost")
    closed = as_json(sandbox, dp)

    assert processor.process(event(closed, "evt_closed", "charge.dispute.closed")) == "dispute_lost"
    assert processor.process(event(closed, "evt_closed", "charge.dispute.closed")) == processor.DUPLICATE
    before = (ledger_ids(), WalletTable.from_settings().balances(SELLER), PayoutsTable.from_settings().get(order_id))
    assert processor.process(event(opened, "evt_created", "charge.dispute.created")) == "dispute_open"
    assert processor.process(event(opened, "evt_withdrawn", "charge.dispute.funds_withdrawn")) == "dispute_open"
    assert service.apply_psp_dispute(closed) == "lost"
    after = (ledger_ids(), WalletTable.from_settings().balances(SELLER), PayoutsTable.from_settings().get(order_id))
    assert after == before
    item = DisputesTable.from_settings().get(dp.id)
    assert item["dispute_status"] == "LOST"
    won = {**closed, "status": "won"}  # the PSP changing its word after the close moves nothing backwards
    assert service.apply_psp_dispute(won) == "outcome_mismatch"
    assert DisputesTable.from_settings().get(dp.id)["dispute_status"] == "LOST"
    invariants_hold()


def test_the_checker_catches_a_broken_dispute_booking(sandbox):
    registered(sandbox)
    order_id = paid_order()
    released(order_id)
    transfer.drive(order_id)
    dp = dispute(sandbox, order_id)
    service.apply_psp_dispute(as_json(sandbox, dp))
    invariants_hold()
    # the owed movement without its ledger twin (a booking lost between the two writes, never resumed)
    boto3.client("dynamodb", region_name="us-east-1").delete_item(
        TableName=settings().ledger_table, Key={"transaction_id": {"S": f"dispute#{dp.id}:{order_id}"}})
    snap = snapshot()
    assert invariants._wallet_matches_ledger(snap) == [f"{SELLER} USD owed: wallet 450 != ledger 0"]
    assert invariants._disputes_booked(snap) == [f"{dp.id}:{order_id}: opened without its ledger transaction",
                                                 f"{dp.id}: OPEN with disputed funds 0, expected 50"]


def test_the_checker_compares_each_dispute_with_the_psps_decision(sandbox):
    # issue 16 (chaos): every dispute in our books as the PSP decided, its PSP balance moved by the decision, a won
    # one reinstated exactly once
    registered(sandbox)
    won_order, lost_order = paid_order(), paid_order("chk_t2")
    won, lost = dispute(sandbox, won_order), dispute(sandbox, lost_order, amount=300)
    for dp, outcome in ((won, "won"), (lost, "lost")):
        service.apply_psp_dispute(as_json(sandbox, dp))
        close_dispute(sandbox.state, dp.id, outcome)

    def decided():
        snap = snapshot()
        snap.psp_disputes = [as_json(sandbox, dp) for dp in (won, lost)]
        return invariants._disputes_as_decided(snap)

    assert decided() == [f"{won.id}: won at the PSP, ours OPEN with steps left",
                         f"{lost.id}: lost at the PSP, ours OPEN with steps left"]
    for dp in (won, lost):
        service.apply_psp_dispute(as_json(sandbox, dp))
    assert decided() == []
    invariants_hold()
    # the reinstatement booked a second time under another id (a retry that did not find the first)
    ledger = LedgerTable.from_settings()
    twice = next(t for t in ledger.scan() if t["transaction_id"] == f"dispute_won#{won.id}:{won_order}")
    again = {**twice, "transaction_id": "x#again"}
    boto3.client("dynamodb", region_name="us-east-1").put_item(
        TableName=settings().ledger_table, Item={k: _attr(v) for k, v in again.items()})
    assert decided() == [f"{won.id}:{won_order}: won, reinstated 2 times, lost 0 times",
                         f"{won.id}:{won_order}: WON moved our PSP balance by 500, not 0"]


def _attr(value):
    return boto3.dynamodb.types.TypeSerializer().serialize(value)
