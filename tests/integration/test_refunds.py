"""Refunds against the PSP sandbox (the unmodified stripe SDK) and moto: the three timings, concurrent refunds,
replay and conflict, a worker killed between steps, a failed refund, a reversal refused -> owed -> netted."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.executor import netting, transfer
from functions.executor import refund as worker
from functions.ledger import journal
from functions.payment import refunds as refunds_api
from functions.payment import service
from functions.payment.payouts import OrderNotSettled
from functions.payment.schemas import RefundRequest
from functions.shared import clock
from functions.shared.config import settings
from functions.shared.errors import NotFound
from functions.shared.status import PayoutStatus
from functions.shared.tables import LedgerTable, PaymentTables, PayoutsTable, RefundsTable, WalletTable
from functions.wallet import refunds as wallet_refunds
from tests.integration.support import place
from tests.integration.test_transfer import SELLER, paid_order, registered, released, transfers_of
from tests.support.aws import drain
from verification import invariants
from verification.invariants import Snapshot


def refund(order_id, refund_id="rf_1", amount=None, reason="damaged"):
    body = {"refund_id": refund_id, "reason": reason, **({"amount": amount} if amount else {})}
    return refunds_api.create_refund(order_id, RefundRequest.model_validate(body))


def run(refund_id="rf_1"):
    """The worker on the API's message (emptied from the queue)."""
    drain(settings().refunds_queue_url)
    return worker.drive(refund_id)


def usd(seller=SELLER):
    return WalletTable.from_settings().balances(seller).get("USD")


def invariants_hold():
    snap = Snapshot(orders=list(PaymentTables.from_settings().scan_orders()),
                    ledger=list(LedgerTable.from_settings().scan()), wallet=list(WalletTable.from_settings().scan()),
                    psp_charges=[])
    assert invariants._wallet_matches_ledger(snap) == []
    assert invariants._ledger_balances(snap) == []


def transferred_order(sandbox, checkout_id="chk_t1"):
    account = registered(sandbox)
    order_id = paid_order(checkout_id)
    released(order_id)
    assert transfer.drive(order_id) == "transferred"
    return order_id, account


# --- the three timings ------------------------------------------------------------------------------------


def test_a_refund_while_held_shrinks_pending_and_the_release_works_on_what_remains(sandbox):
    registered(sandbox)
    order_id = paid_order()
    view, replayed = refund(order_id, amount="5.00")
    assert (view.status, view.amount, replayed) == ("PENDING", "5.00", False)
    assert run() == "succeeded"

    item = RefundsTable.from_settings().get("rf_1")
    assert (item["refund_status"], item["timing"], item["books_applied"]) == ("SUCCEEDED", "held", True)
    assert usd()["pending_minor"] == 734
    [made] = sandbox.state.refunds.values()
    assert (made.amount, made.idempotency_key, made.metadata["refund_id"]) == (500, "refund:rf_1", "rf_1")
    entries = {(e["account"], e["amount_minor"]) for e in LedgerTable.from_settings().get("refund#rf_1")["entries"]}
    assert entries == {(f"seller_pending:{SELLER}", 500), ("psp_receivable:stripe", -500)}

    released(order_id)  # 10 % of the 7.34 that remains
    assert PayoutsTable.from_settings().get(order_id)["net_minor"] == 661
    assert transfer.drive(order_id) == "transferred"
    [sent] = transfers_of(sandbox, order_id)
    assert sent.amount == 661
    assert usd() == {"pending_minor": 0, "available_minor": 0, "transferred_minor": 661, "owed_minor": 0}
    invariants_hold()
    view = service.get_order(order_id)
    assert view.refunded == "5.00" and [(r.refund_id, r.status, r.amount) for r in view.refunds] == [
        ("rf_1", "SUCCEEDED", "5.00")]


def test_a_refund_released_before_the_transfer_takes_the_sellers_share_and_the_transfer_sends_less(sandbox):
    registered(sandbox)
    order_id = paid_order()
    item = released(order_id)  # gross 1234, commission 123, net 1111
    transfer.apply_release(item, clock.iso())
    PayoutsTable.from_settings().mark_release_applied(order_id, clock.iso())

    refund(order_id, amount="5.00")
    assert run() == "succeeded"
    stored = RefundsTable.from_settings().get("rf_1")
    assert (stored["timing"], stored["seller_share_minor"], stored["commission_share_minor"]) == ("released", 450, 50)
    payout = PayoutsTable.from_settings().get(order_id)
    assert (payout["net_minor"], payout["commission_minor"]) == (661, 73)
    assert usd()["available_minor"] == 661

    assert transfer.drive(order_id) == "transferred"
    assert [t.amount for t in transfers_of(sandbox, order_id)] == [661]
    assert usd() == {"pending_minor": 0, "available_minor": 0, "transferred_minor": 661, "owed_minor": 0}
    invariants_hold()


def test_a_refund_after_the_transfer_reverses_the_sellers_share(sandbox):
    order_id, account = transferred_order(sandbox)
    refund(order_id, amount="5.00")
    assert run() == "succeeded"

    stored = RefundsTable.from_settings().get("rf_1")
    assert (stored["timing"], stored["reversal_status"], stored["seller_share_minor"]) == ("transferred",
                                                                                         "SUCCEEDED", 450)
    [sent] = transfers_of(sandbox, order_id)
    assert sent.amount_reversed == 450 and sent.reversals[0].metadata == {"refund_id": "rf_1"}
    assert sandbox.state.accounts[account].balance["usd"] == 1111 - 450
    assert usd() == {"pending_minor": 0, "available_minor": 0, "transferred_minor": 1111, "owed_minor": 0}
    assert LedgerTable.from_settings().get("reversal#rf_1") is not None
    invariants_hold()
    assert refunds_api.get_refund("rf_1").reversal.status == "SUCCEEDED"


# --- reversal refused -> owed -> netted ---------------------------------------------------------------------


def test_a_refused_reversal_leaves_the_share_owed_and_the_next_transfer_nets_it(sandbox):
    order_id, account = transferred_order(sandbox)
    sandbox.state.pay_out_account(account, 1000, "usd")  # the seller's account keeps 1.11 USD
    refund(order_id)  # all of it: the seller's share is the whole 11.11
    assert run() == "succeeded"
    stored = RefundsTable.from_settings().get("rf_1")
    assert (stored["reversal_status"], stored["reversal_code"]) == ("REFUSED", "balance_insufficient")
    assert usd()["owed_minor"] == 1111
    invariants_hold()

    second = paid_order("chk_t2", amount="20.00")  # net 18.00
    released(second)
    assert transfer.drive(second) == "transferred"
    [sent] = transfers_of(sandbox, second)
    assert sent.amount == 1800 - 1111
    payout = PayoutsTable.from_settings().get(second)
    assert (payout["netted_minor"], payout["payout_status"]) == (1111, PayoutStatus.TRANSFERRED)
    order = service.get_order(second)
    assert (order.seller_net, order.netted, order.transferred) == ("18.00", "11.11", "6.89")
    assert usd() == {"pending_minor": 0, "available_minor": 0, "transferred_minor": 1111 + 689, "owed_minor": 0}
    assert LedgerTable.from_settings().get(f"netting#{second}") is not None
    invariants_hold()


@pytest.mark.parametrize("later_attempt_first", [True, False])
def test_two_deliveries_of_one_payout_net_the_same_amount_in_wallet_payout_and_ledger(sandbox, later_attempt_first):
    from functions.executor import netting

    order_id, account = transferred_order(sandbox)
    sandbox.state.pay_out_account(account, 1000, "usd")  # the reversal will be refused: 11.11 owed
    refund(order_id)
    assert run() == "succeeded" and usd()["owed_minor"] == 1111
    second = paid_order("chk_t2", amount="20.00")
    released(second)
    payouts = PayoutsTable.from_settings()
    transfer.apply_release(payouts.get(second), clock.iso())
    payouts.mark_release_applied(second, clock.iso())
    first = payouts.begin_transfer(second, clock.iso(), clock.iso(), account)  # one delivery, attempt 1
    later = payouts.begin_transfer(second, clock.iso(), clock.iso(), account)  # another at once, attempt 2

    order = (later, first) if later_attempt_first else (first, later)
    decided = [netting.net_owed(attempt, clock.iso()) for attempt in order]
    assert decided[0] == decided[1] == int(payouts.get(second)["netted_minor"])
    invariants_hold()


# --- the guard, replays, conflicts --------------------------------------------------------------------------


def test_concurrent_refunds_never_pass_the_orders_amount(sandbox):
    order_id = paid_order()

    def attempt(n):
        try:
            refund(order_id, refund_id=f"rf_{n}", amount="7.00")
            return "accepted"
        except refunds_api.RefundExceedsRemaining:
            return "refused"

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(attempt, range(4)))
    assert sorted(outcomes) == ["accepted", "refused", "refused", "refused"]
    assert PaymentTables.from_settings().get_order(order_id)["refunded_minor"] == 700
    refund(order_id, refund_id="rf_rest")  # all that remains: 5.34
    assert RefundsTable.from_settings().get("rf_rest")["amount_minor"] == 534
    with pytest.raises(refunds_api.RefundExceedsRemaining):
        refund(order_id, refund_id="rf_more")


def test_a_replay_answers_the_same_and_a_conflict_changes_nothing(sandbox):
    order_id = paid_order()
    first, _ = refund(order_id, amount="5.00")
    run()
    again, replayed = refund(order_id, amount="5.00")
    assert replayed and again == first  # the answer as first given, though SUCCEEDED since
    with pytest.raises(refunds_api.RefundConflict):
        refund(order_id, amount="6.00")
    assert len(sandbox.state.refunds) == 1
    assert PaymentTables.from_settings().get_order(order_id)["refunded_minor"] == 500


def test_a_refund_stored_but_not_sent_is_a_503_and_the_retry_sends_it(sandbox, monkeypatch):
    from functions.shared import queues
    from functions.shared.errors import AwsTransientError

    order_id = paid_order()
    real = queues.enqueue_refund

    def sqs_down(*args, **kwargs):
        raise RuntimeError("SQS unavailable")

    monkeypatch.setattr(queues, "enqueue_refund", sqs_down)
    with pytest.raises(AwsTransientError):  # never a 202 that nothing would drive
        refund(order_id, amount="5.00")
    monkeypatch.setattr(queues, "enqueue_refund", real)
    answer, replayed = refund(order_id, amount="5.00")  # the caller's retry
    assert replayed and answer.status == "PENDING"
    assert [json.loads(body)["refund_id"] for body in drain(settings().refunds_queue_url)] == ["rf_1"]
    assert worker.drive("rf_1") == "succeeded"


def test_refusals_of_the_api(sandbox):
    with pytest.raises(NotFound):
        refund("po_nobody")
    [order_id] = place("chk_new", orders=((SELLER, "3.00", "USD"),))
    with pytest.raises(OrderNotSettled):
        refund(order_id)


# --- failures and crashes -----------------------------------------------------------------------------------


def test_a_failed_refund_gives_the_reservation_back_and_moves_no_money(sandbox):
    order_id = paid_order()
    sandbox.state.refund_pending_seconds = 600
    refund(order_id, amount="5.00")
    assert worker.drive("rf_1") == "pending"
    messages = [json.loads(b) for b in drain(settings().refunds_queue_url)]
    assert {"refund_id": "rf_1"} in messages  # the poll
    [made] = sandbox.state.refunds.values()
    sandbox.state.resolve_refund(made.id, "failed")

    assert worker.drive("rf_1") == "failed"
    stored = RefundsTable.from_settings().get("rf_1")
    assert (stored["refund_status"], stored["failure_code"]) == ("FAILED", "expired_or_canceled_card")
    assert PaymentTables.from_settings().get_order(order_id)["refunded_minor"] == 0
    assert usd()["pending_minor"] == 1234 and LedgerTable.from_settings().get("refund#rf_1") is None
    # a late "succeeded" (a webhook out of order) changes nothing: the status machine decides
    assert worker.apply_psp_refund({"id": made.id, "status": "succeeded", "metadata": {"refund_id": "rf_1"}}) \
        == "failed"


def test_the_webhook_path_moves_a_pending_refund_once(sandbox):
    order_id = paid_order()
    sandbox.state.refund_pending_seconds = 600
    refund(order_id, amount="5.00")
    assert worker.drive("rf_1") == "pending"
    sandbox.advance_clock(601)
    [made] = sandbox.state.refunds.values()
    event_object = sandbox.state.to_json(made)
    assert worker.apply_psp_refund(event_object) == "succeeded"
    assert worker.apply_psp_refund(event_object) == "succeeded"  # delivered twice
    assert worker.drive("rf_1") == "succeeded"  # and the poll after it
    assert usd()["pending_minor"] == 734
    invariants_hold()


def test_a_worker_killed_between_steps_then_redelivered_changes_nothing_twice(sandbox, monkeypatch):
    order_id, _ = transferred_order(sandbox)
    refund(order_id, amount="5.00")
    real = journal.record

    def dies_on_the_reversal(transaction, table=None):
        if transaction.kind == "reversal":
            raise RuntimeError("killed")
        return real(transaction, table)

    monkeypatch.setattr(journal, "record", dies_on_the_reversal)
    with pytest.raises(RuntimeError):
        worker.drive("rf_1")
    monkeypatch.setattr(journal, "record", real)
    assert worker.drive("rf_1") == "succeeded"
    assert worker.drive("rf_1") == "succeeded"

    [sent] = transfers_of(sandbox, order_id)
    assert sent.amount_reversed == 450 and len(sent.reversals) == 1
    assert len(sandbox.state.refunds) == 1
    assert usd() == {"pending_minor": 0, "available_minor": 0, "transferred_minor": 1111, "owed_minor": 0}
    invariants_hold()


def test_a_share_whose_reversal_is_still_to_come_is_never_netted_too(sandbox, monkeypatch):
    """Killed before the reversal: the share must not sit in `owed` meanwhile, or the seller's next transfer would
    net it and the redelivered reversal take it a second time."""
    from functions.shared import psp

    order_a, _ = transferred_order(sandbox)
    refund(order_a, amount="5.00")  # the seller's share: 4.50
    real = psp.PspClient.reverse_transfer

    def killed(self, *args, **kwargs):
        raise RuntimeError("Lambda killed before the reversal")

    monkeypatch.setattr(psp.PspClient, "reverse_transfer", killed)
    with pytest.raises(RuntimeError):
        worker.drive("rf_1")
    assert usd()["owed_minor"] == 0

    order_b = paid_order("chk_t2", amount="20.00")  # net 18.00
    released(order_b)
    assert transfer.drive(order_b) == "transferred"
    [sent_b] = transfers_of(sandbox, order_b)
    assert sent_b.amount == 1800  # nothing netted: the share is not owed

    monkeypatch.setattr(psp.PspClient, "reverse_transfer", real)
    assert worker.drive("rf_1") == "succeeded"  # SQS delivers the refund again
    [sent_a] = transfers_of(sandbox, order_a)
    assert sent_a.amount_reversed == 450 and usd()["owed_minor"] == 0
    invariants_hold()


def test_owed_reads_the_sellers_owed_shard(sandbox):
    assert wallet_refunds.owed(SELLER, "USD") == 0


def test_a_refund_waiting_on_a_stuck_payout_is_alarmed_after_a_day_and_moves_on_once_the_payout_does(
        sandbox, monkeypatch):
    # Given a released order whose release is not applied yet (its pay-out between two steps)
    registered(sandbox)
    order_id = paid_order()
    item = released(order_id)
    sent = []
    enqueue = worker.queues.enqueue_refund
    monkeypatch.setattr(worker.queues, "enqueue_refund", lambda rid, delay=0: (sent.append(delay), enqueue(rid, delay)))
    refund(order_id, amount="5.00")
    # When the refund waits: the next look in a minute, and no alarm
    worker.metrics.clear_metrics()
    assert run() == "waiting" and sent[-1] == worker.WAIT_FOR_PAYOUT_S
    assert worker.WAITING_METRIC not in worker.metrics.provider.metric_set
    # A day later it is still waiting: counted for the alarm, and looked at every 15 minutes only
    monkeypatch.setattr(clock, "_offset", worker.WAIT_ALARM_AFTER + clock.timedelta(minutes=1))
    assert run() == "waiting" and sent[-1] == worker.STUCK_WAIT_S
    assert worker.WAITING_METRIC in worker.metrics.provider.metric_set
    # Then, once the pay-out moves on, the same refund succeeds by itself
    transfer.apply_release(item, clock.iso())
    PayoutsTable.from_settings().mark_release_applied(order_id, clock.iso())
    assert run() == "succeeded"
    worker.metrics.clear_metrics()


def test_a_netting_in_a_three_decimal_currency_keeps_what_is_sent_in_stripes_steps(sandbox):
    # Given a seller owing 1.235 KWD (a debt not in Stripe's 0.010 steps) and a pay-out of 8.780 KWD
    wallet = WalletTable.from_settings()
    wallet.apply_movement_parts(SELLER, "test_debt", "d1", "KWD",
                                [(wallet_refunds.owed_shard_reference(SELLER), {"owed": 1235}),
                                 ("po_kwd", {"available": 8780})], now=clock.iso())
    payout = {"payment_order_id": "po_kwd", "seller_account": SELLER, "currency": "KWD", "net_minor": 8780,
              "transfer_attempts": 1}
    # When the transfer decides its netting: k rounded down to the step, so net - k is an amount Stripe moves
    assert netting._decide(payout, wallet, clock.iso()) == 1230
    assert wallet_refunds.owed(SELLER, "KWD") == 5  # the rest waits for a later transfer
