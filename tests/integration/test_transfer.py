"""The Transfer worker against the PSP sandbox (the unmodified stripe SDK) and moto: one Transfer per order, wallet
and ledger moved once, whatever is delivered twice or dies between two steps; the balance short, the account
refused, the seller without an account, the key past its lifetime, the Transfer of another amount."""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from functions.executor import handler as executor
from functions.executor import payout_letters, sweeper, transfer
from functions.ledger import journal
from functions.payment import payouts as payouts_api
from functions.shared import clock, psp
from functions.shared.config import reload_settings, settings
from functions.shared.errors import PspTransientError
from functions.shared.money import Money
from functions.shared.status import OrderStatus, PayoutStatus
from functions.shared.tables import LedgerTable, PaymentTables, PayoutsTable, SellersTable, WalletTable
from functions.wallet import movements
from ops.payouts import retry_payout
from tests.integration.support import place, work_of
from tests.support.aws import drain
from tests.support.events import FakeContext, load

SELLER = "seller_a"


def connected_account() -> str:
    """A seller's Express account with the transfers capability, created as the marketplace's onboarding does."""
    return psp.client()._stripe.v1.accounts.create(params={
        "type": "express", "country": "US", "capabilities": {"transfers": {"requested": True}}}).id


def paid_order(checkout_id="chk_t1", amount="12.34", seller=SELLER, auto_release_at=None) -> str:
    """A SUCCESS order as the pay-in leaves it: charged at the sandbox, pending in wallet and ledger, a HELD
    payout naming its charge."""
    [order_id] = place(checkout_id, orders=((seller, amount, "USD"),))
    PaymentTables.from_settings().begin_charge_attempt(f"{checkout_id}#USD", 1, clock.iso(), clock.iso())
    result = executor.execute(work_of(checkout_id))
    assert result.outcome == "succeeded", result
    tables = PaymentTables.from_settings()
    tables.mark_orders_executing([order_id], clock.iso())
    tables.finish(order_id, OrderStatus.SUCCESS, {"charge_id": result.charge_id}, clock.iso())
    tables.finish_charge(f"{checkout_id}#USD", OrderStatus.SUCCESS, {}, clock.iso())
    gross = Money.from_major(amount, "USD")
    movements.credit_pending(seller, order_id, gross, clock.iso())
    journal.record(journal.payin(order_id, seller, gross, psp.PSP_NAME))
    PayoutsTable.from_settings().create_held([{
        "payment_order_id": order_id, "seller_account": seller, "checkout_id": checkout_id, "currency": "USD",
        "gross_minor": gross.minor, "psp": psp.PSP_NAME, "charge_id": result.charge_id, "settled_at": clock.iso(),
        "auto_release_at": auto_release_at}])
    return order_id


def released(order_id, commission_bps=1000) -> dict:
    payouts = PayoutsTable.from_settings()
    gross = int(payouts.get(order_id)["gross_minor"])
    commission = gross * commission_bps // 10000
    item = payouts.release(order_id, commission_bps, commission, gross - commission, clock.iso(), clock.iso())
    assert item is not None
    return item


def registered(sandbox, seller=SELLER, commission_bps=1000) -> str:
    account = connected_account()
    SellersTable.from_settings().put(seller, commission_bps=commission_bps, now=clock.iso(), psp_account_id=account)
    return account


def transfers_of(sandbox, order_id):
    return [t for t in sandbox.state.transfers.values() if t.metadata.get("payment_order_id") == order_id]


def books(order_id, seller=SELLER):
    """(wallet balances in USD, the ledger's transaction ids of the order)."""
    ledger = LedgerTable.from_settings()
    ids = [f"{kind}#{order_id}" for kind in ("payin", "release", "transfer")]
    return WalletTable.from_settings().balances(seller).get("USD"), sorted(ledger.get_many(ids))


def sqs_event(order_ids):
    event = load("sqs_order.json")
    record = event["Records"][0]
    event["Records"] = [dict(record, messageId=f"m{i}", body=json.dumps({"payment_order_id": order_id}))
                        for i, order_id in enumerate(order_ids)]
    return event


def assert_transferred_once(sandbox, order_id, account, net=1111, gross=1234):
    [made] = transfers_of(sandbox, order_id)
    assert (made.amount, made.currency, made.destination) == (net, "usd", account)
    payout = PayoutsTable.from_settings().get(order_id)
    assert payout["payout_status"] == PayoutStatus.TRANSFERRED and payout["transfer_id"] == made.id
    assert "due_at" not in payout and "sweep_shard" not in payout
    balances, transactions = books(order_id)
    assert balances == {"pending_minor": 0, "available_minor": 0, "transferred_minor": net, "owed_minor": 0}
    assert transactions == sorted(f"{kind}#{order_id}" for kind in ("payin", "release", "transfer"))
    entries = LedgerTable.from_settings().get(f"transfer#{order_id}")["entries"]
    assert {(e["account"], e["amount_minor"]) for e in entries} == {
        (f"seller_available:{SELLER}", net), ("psp_receivable:stripe", -net)}
    return made


# --- success, once ----------------------------------------------------------------------------------------


def test_a_released_order_is_transferred_once_even_when_delivered_twice(sandbox):
    account = registered(sandbox)
    order_id = paid_order()
    released(order_id)

    answer = transfer.handler(sqs_event([order_id, order_id]), FakeContext())
    assert transfer.drive(order_id) == "nothing"  # a third delivery, after the end

    assert answer == {"batchItemFailures": []}
    made = assert_transferred_once(sandbox, order_id, account)
    charge_id = PayoutsTable.from_settings().get(order_id)["charge_id"]
    assert (made.transfer_group, made.source_transaction) == ("chk_t1", charge_id)
    assert made.metadata == {"payment_order_id": order_id, "checkout_id": "chk_t1", "seller_account": SELLER}
    assert made.idempotency_key == f"transfer:{order_id}"


def test_two_deliveries_at_once_make_one_transfer(sandbox):
    account = registered(sandbox)
    order_id = paid_order()
    released(order_id)

    def deliver():
        try:
            return transfer.drive(order_id)
        except PspTransientError:  # the other's request with the same key in flight (409): SQS redelivers
            return "redelivered"

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda _: deliver(), range(2)))
    if "transferred" not in outcomes:
        outcomes.append(transfer.drive(order_id))

    assert "transferred" in outcomes
    assert_transferred_once(sandbox, order_id, account)


def test_a_net_of_zero_ends_transferred_with_nothing_sent_nor_booked(sandbox):
    registered(sandbox, commission_bps=10000)
    order_id = paid_order()
    released(order_id, commission_bps=10000)

    assert transfer.drive(order_id) == "transferred"

    payout = PayoutsTable.from_settings().get(order_id)
    assert payout["payout_status"] == PayoutStatus.TRANSFERRED and payout["transfer_id"] == transfer.NO_TRANSFER
    assert "transferred_bucket" not in payout  # recon expects no row of the PSP for it
    assert transfers_of(sandbox, order_id) == []
    balances, transactions = books(order_id)
    assert balances == {"pending_minor": 0, "available_minor": 0, "transferred_minor": 0, "owed_minor": 0}
    assert transactions == sorted([f"payin#{order_id}", f"release#{order_id}"])


def test_held_and_final_payouts_are_left_alone(sandbox):
    registered(sandbox)
    order_id = paid_order()
    assert transfer.drive(order_id) == "nothing"  # HELD: not released yet
    assert transfers_of(sandbox, order_id) == []
    assert books(order_id)[1] == [f"payin#{order_id}"]


def test_a_message_for_an_unknown_payout_fails_alone_and_stays_for_a_human(sandbox):
    order_id = paid_order()
    answer = transfer.handler(sqs_event([order_id, "po_missing"]), FakeContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m1"}]}


def test_the_storefronts_release_sends_the_payout_to_the_worker_which_transfers_it(sandbox):
    account = registered(sandbox)
    order_id = paid_order()

    view, first = payouts_api.release(order_id)

    assert first and view.seller_net == "11.11"
    [body] = drain(settings().payouts_queue_url)
    assert transfer.handler(sqs_event([json.loads(body)["payment_order_id"]]), FakeContext()) == {
        "batchItemFailures": []}
    assert_transferred_once(sandbox, order_id, account)


def test_a_held_payout_past_its_auto_release_is_released_by_the_sweeper_then_transferred(sandbox):
    account = registered(sandbox)
    order_id = paid_order(auto_release_at=clock.iso(clock.now() + timedelta(days=3)))
    assert sweeper.sweep()["payouts_released"] == 0

    clock.advance(3 * 24 * 3600 + 1)
    assert sweeper.sweep()["payouts_released"] == 1
    assert sweeper.sweep()["payouts_released"] == 0  # released once

    payout = PayoutsTable.from_settings().get(order_id)
    assert payout["payout_status"] == PayoutStatus.RELEASED and payout["commission_bps"] == 1000
    [body] = drain(settings().payouts_queue_url)
    assert transfer.drive(json.loads(body)["payment_order_id"]) == "transferred"
    assert_transferred_once(sandbox, order_id, account)


# --- a crash after each step --------------------------------------------------------------------------------


class Crash(Exception):
    pass


def _after(target, name):
    real = getattr(target, name)

    def crashing(*args, **kwargs):
        real(*args, **kwargs)
        raise Crash(name)

    return crashing


CRASH_POINTS = [
    (movements, "release"), (transfer, "apply_release"), (PayoutsTable, "mark_release_applied"),
    (PayoutsTable, "begin_transfer"), (psp.PspClient, "transfer"), (PayoutsTable, "record_transfer_id"),
    (movements, "transfer_out"), (transfer, "apply_transfer"), (PayoutsTable, "finish_transfer"),
]


@pytest.mark.parametrize(("target", "name"), CRASH_POINTS, ids=[name for _, name in CRASH_POINTS])
def test_a_worker_killed_after_any_step_is_resumed_to_one_transfer(sandbox, monkeypatch, target, name):
    account = registered(sandbox)
    order_id = paid_order()
    released(order_id)
    with monkeypatch.context() as patched:
        patched.setattr(target, name, _after(target, name))
        with pytest.raises(Crash):
            transfer.drive(order_id)

    outcome = transfer.drive(order_id)

    assert outcome in ("transferred", "nothing")
    assert_transferred_once(sandbox, order_id, account)
    assert transfer.drive(order_id) == "nothing"


def test_a_killed_worker_whose_message_is_lost_is_resumed_by_the_sweeper(sandbox, monkeypatch):
    account = registered(sandbox)
    order_id = paid_order()
    released(order_id)
    monkeypatch.setattr(PayoutsTable, "record_transfer_id", _after(PayoutsTable, "record_transfer_id"))
    with pytest.raises(Crash):
        transfer.drive(order_id)
    monkeypatch.undo()
    assert sweeper.sweep()["payouts_enqueued"] == 0  # its deadline is ahead

    clock.advance(settings().transfer_deadline_s + 1)
    assert sweeper.sweep()["payouts_enqueued"] == 1
    assert sweeper.sweep()["payouts_enqueued"] == 0  # not sent again before the next deadline
    [body] = drain(settings().payouts_queue_url)
    assert transfer.drive(json.loads(body)["payment_order_id"]) == "transferred"
    assert_transferred_once(sandbox, order_id, account)


# --- the platform's balance short, the account refused -------------------------------------------------------


def test_a_balance_short_is_retried_later_with_a_growing_wait_then_succeeds(sandbox):
    account = registered(sandbox)
    order_id = paid_order()
    released(order_id)
    sandbox.state.set_balance_short(True)

    waits = []
    for _ in range(2):
        before = clock.now()
        assert transfer.drive(order_id) == "balance_short"
        payout = PayoutsTable.from_settings().get(order_id)
        assert payout["payout_status"] == PayoutStatus.TRANSFERRING and "balance_insufficient" in payout["last_error"]
        waits.append(clock.parse_iso(payout["due_at"]) - before)
        clock.advance(waits[-1].total_seconds() + 1)
    assert [round(w.total_seconds() / 60) for w in waits] == [15, 30]
    assert transfers_of(sandbox, order_id) == [] and books(order_id)[0]["available_minor"] == 1111

    sandbox.state.set_balance_short(False)
    assert sweeper.sweep()["payouts_enqueued"] == 1
    [body] = drain(settings().payouts_queue_url)
    assert transfer.drive(json.loads(body)["payment_order_id"]) == "transferred"
    assert_transferred_once(sandbox, order_id, account)


def postponed_for_the_balance(sandbox) -> str:
    """A released pay-out whose first Transfer was refused for the platform's balance (postponed)."""
    registered(sandbox)
    order_id = paid_order()
    released(order_id)
    sandbox.state.set_balance_short(True)
    assert transfer.drive(order_id) == "balance_short"
    sandbox.state.set_balance_short(False)
    return order_id


def test_a_message_before_the_balance_short_wait_ends_spends_no_attempt_and_calls_no_psp(sandbox, monkeypatch):
    # Given a pay-out postponed for the platform's balance, with two messages still queued for it (a duplicate, a
    # release's): on AWS each would otherwise spend one of the 30 attempts, and a long shortage dead-letters it
    order_id = postponed_for_the_balance(sandbox)
    payouts = PayoutsTable.from_settings()
    postponed = payouts.get(order_id)
    sent = []
    real_transfer = psp.PspClient.transfer
    monkeypatch.setattr(psp.PspClient, "transfer", lambda self, *a, **k: sent.append(a) or real_transfer(self, *a, **k))

    assert [transfer.drive(order_id) for _ in range(2)] == ["not_due", "not_due"]
    assert sent == [] and int(payouts.get(order_id)["transfer_attempts"]) == int(postponed["transfer_attempts"])

    # Then once its time has come (the sweeper's message, or any left over) it is tried again
    clock.advance((clock.parse_iso(postponed["due_at"]) - clock.now()).total_seconds() + 1)
    assert transfer.drive(order_id) == "transferred"
    assert len(sent) == 1 and int(payouts.get(order_id)["transfer_attempts"]) == int(postponed["transfer_attempts"]) + 1


def test_a_due_at_set_by_anyone_else_ends_the_wait_at_once(sandbox):
    order_id = postponed_for_the_balance(sandbox)
    # an operator makes it due now (as a won dispute or a seller's registration does): another due_at
    PayoutsTable.from_settings().postpone(order_id, clock.iso(), clock.iso(), "due now")
    assert transfer.drive(order_id) == "transferred"


def test_the_balance_short_wait_stops_growing_at_six_hours(sandbox, monkeypatch):
    monkeypatch.setenv("MAX_TRANSFER_ATTEMPTS", "100")
    reload_settings()
    registered(sandbox)
    order_id = paid_order()
    released(order_id)
    sandbox.state.set_balance_short(True)
    payouts = PayoutsTable.from_settings()
    for _ in range(30):
        payouts.begin_transfer(order_id, clock.iso(), clock.iso())
    before = clock.now()
    assert transfer.drive(order_id) == "balance_short"
    wait = clock.parse_iso(payouts.get(order_id)["due_at"]) - before
    assert round(wait.total_seconds() / 60) == transfer.BALANCE_SHORT_MAX.total_seconds() / 60 == 360


def test_a_restricted_account_fails_the_payout_with_a_dead_letter_and_ops_retry_transfers_it(sandbox):
    account = registered(sandbox)
    order_id = paid_order()
    released(order_id)
    sandbox.state.restrict_account(account)

    assert transfer.drive(order_id) == "failed"

    payout = PayoutsTable.from_settings().get(order_id)
    assert payout["payout_status"] == PayoutStatus.FAILED and "due_at" not in payout
    assert payout["payout_failure_code"] == "insufficient_capabilities_for_transfer"
    assert payout["payout_failure_reason"]
    [letter] = map(json.loads, drain(settings().payouts_dlq_url))
    assert letter["payment_order_id"] == order_id and letter["step"] == "transfer"
    assert "insufficient_capabilities_for_transfer" in letter["error"]
    assert books(order_id)[0]["available_minor"] == 1111  # the money stays the seller's, available
    assert transfer.drive(order_id) == "nothing"  # FAILED is final until an operator retries

    sandbox.state.unrestrict_account(account)
    outcome = retry_payout(PayoutsTable.from_settings(), order_id)
    assert outcome.action.value == "moved" and "FAILED (insufficient_capabilities_for_transfer) -> RELEASED" in \
        outcome.detail
    [body] = drain(settings().payouts_queue_url)
    assert transfer.drive(json.loads(body)["payment_order_id"]) == "transferred"
    assert_transferred_once(sandbox, order_id, account)


def test_an_unknown_destination_fails_the_payout(sandbox):
    SellersTable.from_settings().put(SELLER, commission_bps=1000, now=clock.iso(), psp_account_id="acct_1Unknown")
    order_id = paid_order()
    released(order_id)
    assert transfer.drive(order_id) == "failed"
    assert PayoutsTable.from_settings().get(order_id)["payout_status"] == PayoutStatus.FAILED
    assert transfers_of(sandbox, order_id) == []


def test_an_unclear_answer_fails_the_message_and_leaves_the_payout_due(sandbox, monkeypatch):
    account = registered(sandbox)
    order_id = paid_order()
    released(order_id)

    def unclear(*args, **kwargs):
        raise PspTransientError("APIConnectionError: timed out")

    monkeypatch.setattr(psp.PspClient, "transfer", unclear)
    answer = transfer.handler(sqs_event([paid_order("chk_t2", seller="seller_b"), order_id]), FakeContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    payout = PayoutsTable.from_settings().get(order_id)
    assert payout["payout_status"] == PayoutStatus.TRANSFERRING and "due_at" in payout
    monkeypatch.undo()
    assert transfer.drive(order_id) == "transferred"
    assert_transferred_once(sandbox, order_id, account)


# --- the seller without a connected account -----------------------------------------------------------------


def test_a_seller_without_an_account_waits_then_is_transferred_once_registered(sandbox):
    order_id = paid_order()
    released(order_id, commission_bps=0)

    assert transfer.drive(order_id) == "awaiting_seller"
    payout = PayoutsTable.from_settings().get(order_id)
    assert payout["awaiting_seller"] == SELLER and payout["payout_status"] == PayoutStatus.RELEASED
    balances, _ = books(order_id)
    assert balances["available_minor"] == 1234 and transfers_of(sandbox, order_id) == []

    clock.advance(payout_letters.AWAIT_SELLER.total_seconds() + 1)
    assert sweeper.sweep()["payouts_awaiting"] == 1  # looked at again: still no account, nothing sent
    assert drain(settings().payouts_queue_url) == []

    account = registered(sandbox, commission_bps=0)
    assert PayoutsTable.from_settings().wake_awaiting(SELLER, clock.iso()) == [order_id]
    assert transfer.drive(order_id) == "transferred"
    assert_transferred_once(sandbox, order_id, account, net=1234)


def test_the_sweeper_sends_an_awaiting_payout_on_once_its_seller_has_an_account(sandbox):
    order_id = paid_order()
    released(order_id)
    assert transfer.drive(order_id) == "awaiting_seller"
    account = registered(sandbox)  # registered, but the wake-up was lost

    clock.advance(payout_letters.AWAIT_SELLER.total_seconds() + 1)
    assert sweeper.sweep()["payouts_enqueued"] == 1
    [body] = drain(settings().payouts_queue_url)
    assert transfer.drive(json.loads(body)["payment_order_id"]) == "transferred"
    assert_transferred_once(sandbox, order_id, account)


def test_a_registration_racing_the_worker_is_not_left_to_the_safety_net(sandbox, monkeypatch):
    """The seller registers after the worker read "no account" and before it marked the payout awaiting: the
    registration's wake-up finds nothing, so the worker itself must see the account."""
    order_id = paid_order()
    released(order_id)
    payouts = PayoutsTable.from_settings()
    accounts = []
    mark_awaiting = payouts.await_seller

    def registration_lands_meanwhile(*args):
        accounts.append(registered(sandbox))
        assert payouts.wake_awaiting(SELLER, clock.iso()) == []  # nothing marked yet: nothing to wake
        return mark_awaiting(*args)

    monkeypatch.setattr(payouts, "await_seller", registration_lands_meanwhile)
    assert transfer.drive(order_id, payouts) == "transferred"
    assert_transferred_once(sandbox, order_id, accounts[0])
    assert "awaiting_seller" not in payouts.get(order_id)


# --- the key past its lifetime, and a Transfer of another amount -------------------------------------------


def test_past_the_keys_lifetime_the_transfer_is_looked_up_never_made_twice(sandbox, monkeypatch):
    account = registered(sandbox)
    order_id = paid_order()
    released(order_id)
    monkeypatch.setattr(psp.PspClient, "transfer", _after(psp.PspClient, "transfer"))  # the answer is lost
    with pytest.raises(Crash):
        transfer.drive(order_id)
    monkeypatch.undo()
    day = 24 * 3600 + 60
    clock.advance(day)
    sandbox.advance_clock(day)  # the sandbox prunes the key: a create now would make a second transfer

    assert transfer.drive(order_id) == "transferred"
    assert_transferred_once(sandbox, order_id, account)


def test_a_transfer_of_the_order_for_another_amount_is_dead_lettered_for_a_human(sandbox, monkeypatch):
    account = registered(sandbox)
    order_id = paid_order()
    released(order_id)
    payout = PayoutsTable.from_settings().begin_transfer(order_id, clock.iso(), clock.iso())
    psp.client()._stripe.v1.transfers.create(params={
        "amount": 999, "currency": "usd", "destination": account, "transfer_group": "chk_t1",
        "source_transaction": payout["charge_id"], "metadata": {"payment_order_id": order_id}})
    clock.advance(24 * 3600)
    assert psp.transfer_key_aged(payout | {"first_transfer_at": payout["first_transfer_at"]})

    assert transfer.drive(order_id) == "dead_lettered"

    stored = PayoutsTable.from_settings().get(order_id)
    assert stored["payout_status"] == PayoutStatus.TRANSFERRING and "due_at" not in stored
    assert "PspOutcomeUnknown" in stored["dead_letter_reason"] and "9.99 USD" in stored["dead_letter_reason"]
    [letter] = map(json.loads, drain(settings().payouts_dlq_url))
    assert letter["payment_order_id"] == order_id and "PspOutcomeUnknown" in letter["error"]
    balances, transactions = books(order_id)
    assert balances["available_minor"] == 1111 and f"transfer#{order_id}" not in transactions
    assert len(transfers_of(sandbox, order_id)) == 1


# --- max attempts --------------------------------------------------------------------------------------------


def test_past_max_attempts_the_payout_is_dead_lettered_once(sandbox, monkeypatch):
    registered(sandbox)
    order_id = paid_order()
    released(order_id)
    monkeypatch.setenv("MAX_TRANSFER_ATTEMPTS", "2")
    reload_settings()
    payouts = PayoutsTable.from_settings()
    for _ in range(2):
        payouts.begin_transfer(order_id, clock.iso(), clock.iso())  # two attempts that died unanswered

    assert sweeper.sweep()["payouts_dead_lettered"] == 1
    assert sweeper.sweep()["payouts_dead_lettered"] == 0  # out of the index: one message, one alarm
    [letter] = map(json.loads, drain(settings().payouts_dlq_url))
    assert letter["payment_order_id"] == order_id and letter["attempts"] == 2
    assert transfers_of(sandbox, order_id) == []


def test_a_stale_message_leaves_a_dead_lettered_payout_to_the_operator(sandbox, monkeypatch):
    account = registered(sandbox)
    order_id = paid_order()
    released(order_id)
    monkeypatch.setenv("MAX_TRANSFER_ATTEMPTS", "1")
    reload_settings()
    payouts = PayoutsTable.from_settings()
    payouts.begin_transfer(order_id, clock.iso(), clock.iso())  # an attempt that died unanswered
    assert sweeper.sweep()["payouts_dead_lettered"] == 1
    monkeypatch.setenv("MAX_TRANSFER_ATTEMPTS", "30")
    reload_settings()

    assert transfer.drive(order_id) == "left_for_operator"  # the message SQS still held, delivered late
    assert payouts.begin_transfer(order_id, clock.iso(), clock.iso()) is None  # one that read before the letter
    assert not payouts.postpone(order_id, clock.iso(), clock.iso(), "late")
    assert not payouts.await_seller(order_id, SELLER, clock.iso(), clock.iso())
    payout = payouts.get(order_id)
    assert "due_at" not in payout and payout["transfer_attempts"] == 1 and transfers_of(sandbox, order_id) == []

    assert retry_payout(payouts, order_id).action.value == "requeued"
    [body] = [json.loads(b) for b in drain(settings().payouts_queue_url)]
    assert transfer.drive(body["payment_order_id"]) == "transferred"
    assert_transferred_once(sandbox, order_id, account)


def test_the_sweeper_starts_without_stripe():
    """The Sweeper has no psp layer: its payout pass must not import the PSP adapter."""
    script = ("import sys\n"
              "class NoStripe:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name.split('.')[0] == 'stripe':\n"
              "            raise ImportError(name)\n"
              "sys.meta_path.insert(0, NoStripe())\n"
              "import functions.executor.sweeper\n")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2])


# --- the destination frozen per key, a transfer the payout cannot record ------------------------------------


def test_an_account_changed_after_a_lost_answer_never_gets_the_same_key_elsewhere(sandbox):
    first = registered(sandbox)
    order_id = paid_order()
    released(order_id)
    sandbox.faults.push("lost_response", match={"path": "/v1/transfers"})
    with pytest.raises(PspTransientError):
        transfer.drive(order_id)
    # the storefront moves the seller to another account while Stripe holds the first Transfer
    SellersTable.from_settings().put(SELLER, commission_bps=1000, now=clock.iso(), psp_account_id=connected_account())

    assert transfer.drive(order_id) == "transferred"
    assert_transferred_once(sandbox, order_id, first)


def test_a_transfer_made_while_the_payout_failed_is_dead_lettered_not_booked(sandbox, monkeypatch):
    account = registered(sandbox)
    order_id = paid_order()
    released(order_id)
    payouts = PayoutsTable.from_settings()
    real = payouts.record_transfer_id

    def failed_meanwhile(self, order, transfer_id, now):
        payouts.fail_transfer(order, "account_invalid", "another attempt saw the account refused", now)
        return real(order, transfer_id, now)

    monkeypatch.setattr(PayoutsTable, "record_transfer_id", failed_meanwhile)
    assert transfer.drive(order_id) == "dead_lettered"
    assert len(transfers_of(sandbox, order_id)) == 1 and transfers_of(sandbox, order_id)[0].destination == account
    balances, transactions = books(order_id)
    assert balances["transferred_minor"] == 0 and f"transfer#{order_id}" not in transactions
    [letter] = drain(settings().payouts_dlq_url)
    assert order_id in json.dumps(letter) and "made while the payout is FAILED" in json.dumps(letter)
