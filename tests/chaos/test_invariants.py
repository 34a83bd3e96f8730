"""The invariant checker catches each violation it claims to catch (and passes a consistent system).

Invariant 1 follows the charge-per-checkout cycle: one PaymentIntent per checkout and currency, for the sum of
that currency's orders, whose outcome every one of those orders shares.
"""

import copy
import json

import pytest

from verification.invariants import Snapshot, check


def order(order_id, checkout_id, seller, minor, currency, status, charge=None):
    """An order as the table holds it; `charge` = (pi, ch) of its charge when it succeeded."""
    item = {"payment_order_id": order_id, "checkout_id": checkout_id, "seller_account": seller,
            "amount_minor": minor, "currency": currency, "charge_key": f"{checkout_id}#{currency}",
            "payment_order_status": status}
    if charge:
        item.update(psp_reference=charge[0], charge_id=charge[1])
    return item


def charge(charge_id, intent, checkout_id, minor, currency, status="succeeded"):
    """A charge as the PSP sandbox records it, with its PaymentIntent's metadata."""
    return {"charge_id": charge_id, "payment_intent": intent, "amount": minor, "currency": currency.lower(),
            "status": status, "metadata": {"checkout_id": checkout_id, "charge_key": f"{checkout_id}#{currency}"}}


def payin(order_id, seller, minor, currency):
    return {"transaction_id": f"payin#{order_id}", "kind": "payin", "reference": order_id, "entries": [
        {"account": "psp_receivable:stripe", "amount_minor": minor, "currency": currency},
        {"account": f"seller_pending:{seller}", "amount_minor": -minor, "currency": currency}]}


def release(order_id, seller, minor, commission, currency):
    return {"transaction_id": f"release#{order_id}", "kind": "release", "reference": order_id, "entries": [
        {"account": f"seller_pending:{seller}", "amount_minor": minor, "currency": currency},
        {"account": f"seller_available:{seller}", "amount_minor": commission - minor, "currency": currency},
        {"account": "platform_revenue", "amount_minor": -commission, "currency": currency}]}


def transfer(order_id, seller, net, currency):
    return {"transaction_id": f"transfer#{order_id}", "kind": "transfer", "reference": order_id, "entries": [
        {"account": f"seller_available:{seller}", "amount_minor": net, "currency": currency},
        {"account": "psp_receivable:stripe", "amount_minor": -net, "currency": currency}]}


def balance(seller, shard, currency, pending=0, available=0, transferred=0):
    return {"account_id": f"{seller}#{shard}", "sk": f"BALANCE#{currency}", "seller_account": seller,
            "currency": currency, "pending_minor": pending, "available_minor": available,
            "transferred_minor": transferred, "owed_minor": 0}


def payout(order_id, seller, minor, currency, status, bps=1000, **fields):
    """A Payouts item: released ones carry the commission frozen at release."""
    item = {"payment_order_id": order_id, "seller_account": seller, "currency": currency, "gross_minor": minor,
            "payout_status": status, **fields}
    if status != "HELD":
        commission = minor * bps // 10000
        item.update(commission_bps=bps, commission_minor=commission, net_minor=minor - commission)
    return item


def psp_transfer(transfer_id, order_id, minor, currency, destination):
    """A transfer as the PSP sandbox records it."""
    return {"id": transfer_id, "amount": minor, "currency": currency.lower(), "destination": destination,
            "metadata": {"payment_order_id": order_id}, "amount_reversed": 0}


def consistent():
    """chk_1: two sellers in USD (one charge of 12.50) and one in EUR (one charge of 8.00), all SUCCESS;
    chk_2: one USD order, its card declined (a failed charge), FAILED. Wallets are spread over shards.
    Pay-outs: po_2 released (20% commission: 50) and transferred to s2's account; po_1 released (10%), waiting
    for s1 to register an account; po_3 held."""
    return Snapshot(
        orders=[
            order("po_1", "chk_1", "s1", 1000, "USD", "SUCCESS", ("pi_1", "ch_1")),
            order("po_2", "chk_1", "s2", 250, "USD", "SUCCESS", ("pi_1", "ch_1")),
            order("po_3", "chk_1", "s1", 800, "EUR", "SUCCESS", ("pi_2", "ch_2")),
            order("po_4", "chk_2", "s2", 700, "USD", "FAILED"),
        ],
        ledger=[payin("po_1", "s1", 1000, "USD"), payin("po_2", "s2", 250, "USD"), payin("po_3", "s1", 800, "EUR"),
                release("po_1", "s1", 1000, 100, "USD"), release("po_2", "s2", 250, 50, "USD"),
                transfer("po_2", "s2", 200, "USD")],
        wallet=[balance("s1", 3, "USD", available=900), balance("s2", 7, "USD", transferred=200),
                balance("s1", 3, "EUR", pending=300), balance("s1", 30, "EUR", pending=500)],
        psp_charges=[charge("ch_1", "pi_1", "chk_1", 1250, "USD"), charge("ch_2", "pi_2", "chk_1", 800, "EUR"),
                     charge("ch_3", "pi_3", "chk_2", 700, "USD", status="failed")],
        observed_statuses={"po_1": ["NOT_STARTED", "EXECUTING", "SUCCESS"]},
        accepted_order_ids=["po_1", "po_2", "po_3", "po_4"],
        card_succeeds={"chk_1": True, "chk_2": False},
        payouts=[payout("po_1", "s1", 1000, "USD", "RELEASED", awaiting_seller="s1"),
                 payout("po_2", "s2", 250, "USD", "TRANSFERRED", bps=2000, transfer_id="tr_1"),
                 payout("po_3", "s1", 800, "EUR", "HELD")],
        sellers=[{"seller_account": "s1", "commission_bps": 1000},
                 {"seller_account": "s2", "psp_account_id": "acct_s2", "commission_bps": 2000}],
        psp_transfers=[psp_transfer("tr_1", "po_2", 200, "USD", "acct_s2")],
        psp_account_balances={"acct_s2": {"usd": 200}},
        observed_payout_statuses={"po_2": ["HELD", "RELEASED", "TRANSFERRING", "TRANSFERRED"]},
        released_order_ids=["po_1", "po_2"],
    )


def violations(snapshot):
    return {r.number: r.violations for r in check(snapshot) if not r.ok}


def test_a_consistent_system_passes():
    assert violations(consistent()) == {}


def mutate(change):
    snap = copy.deepcopy(consistent())
    change(snap)
    return snap


def test_a_multi_currency_checkout_charged_twice_in_one_currency_is_named_by_its_charge():
    found = violations(mutate(lambda s: s.psp_charges.append(charge("ch_9", "pi_9", "chk_1", 800, "EUR"))))
    assert found == {1: ["chk_1#EUR: 2 successful charges (ch_2, ch_9)"]}


def test_a_charge_for_other_than_the_sum_of_its_orders_is_reported():
    found = violations(mutate(lambda s: s.psp_charges[0].update(amount=1000)))  # one seller's share only
    assert found == {1: ["chk_1#USD: charged 1000 (ch_1) but its orders sum to 1250"]}


@pytest.mark.parametrize(("change", "number"), [
    # invariant 1: one charge per checkout and currency, for the sum, shared by its orders
    (lambda s: s.psp_charges.append(charge("ch_9", "pi_9", "chk_1", 800, "EUR")), 1),  # charged twice
    (lambda s: s.psp_charges.append(charge("ch_9", "pi_9", "chk_1", 1250, "USD", "failed")) or
     s.psp_charges[0].update(amount=1251), 1),  # charged a cent more
    (lambda s: s.psp_charges[1].update(status="failed"), 1),  # SUCCESS orders without a successful charge
    (lambda s: s.orders[1].update(payment_order_status="FAILED"), 1),  # FAILED with a succeeded charge
    (lambda s: s.psp_charges[2].update(status="succeeded"), 1),  # a declined checkout's charge went through
    (lambda s: s.psp_charges[1].update(currency="usd"), 1),  # the EUR charge made in USD
    (lambda s: s.psp_charges.append({"charge_id": "ch_8", "payment_intent": "pi_8", "status": "succeeded",
                                     "amount": 1000, "currency": "usd",
                                     "metadata": {"payment_order_id": "po_1"}}), 1),  # a charge per order
    (lambda s: s.orders[0].update(psp_reference="pi_2"), 1),  # names the other currency's PaymentIntent
    (lambda s: s.orders[0].update(charge_id="ch_2"), 1),  # names the other currency's charge
    (lambda s: s.orders[0].pop("charge_id"), 1),  # SUCCESS without its charge: its transfer would have no source
    (lambda s: s.orders[2].update(charge_key="chk_1#USD"), 1),  # recorded under the wrong charge
    (lambda s: s.card_succeeds.update(chk_2=True), 1),  # a card that succeeds, yet the order FAILED
    (lambda s: s.card_succeeds.update(chk_1=False), 1),  # a declined card, yet the orders SUCCESS
    # the others, unchanged by the charge cycle
    (lambda s: s.orders.append(order("po_5", "chk_3", "s1", 100, "USD", "EXECUTING"))
     or s.accepted_order_ids.append("po_5"), 2),
    (lambda s: s.ledger[0]["entries"][1].update(amount_minor=-999), 3),
    (lambda s: s.wallet[0].update(pending_minor=2000), 4),
    (lambda s: s.wallet[3].update(pending_minor=499), 4),  # one shard of several off
    (lambda s: s.wallet[1].update(available_minor=200, transferred_minor=0), 4),  # the right total, wrong bucket
    (lambda s: s.ledger.pop(), 4),  # a transfer in the wallet, not in the ledger
    (lambda s: s.ledger.append(transfer("po_1", "s1", 10, "USD")), 4),  # a transfer the wallet lacks
    (lambda s: s.ledger.append({**s.ledger[0], "transaction_id": "payin#po_1b"}), 4),
    (lambda s: s.ledger.append(payin("po_4", "s2", 700, "USD")) or s.wallet[1].update(pending_minor=700), 4),
    (lambda s: s.observed_statuses.update(po_1=["SUCCESS", "EXECUTING"]), 5),
    (lambda s: s.replays.append({"kind": "same", "checkout_id": "c", "first_status": 202, "second_status": 202,
                                 "first_body": {"a": 1}, "second_body": {"a": 2}, "replayed_header": True}), 6),
    (lambda s: s.replays.append({"kind": "conflict", "checkout_id": "c", "second_status": 202}), 6),
    (lambda s: s.unreadable_after_write.append("po_9"), 7),
    # pay-outs (issue 15): one transfer per order, at most its released net, to its seller, as the PSP holds it
    (lambda s: s.psp_transfers.append(psp_transfer("tr_2", "po_2", 200, "USD", "acct_s2")), 1),  # twice
    (lambda s: s.psp_transfers[0].update(amount=201), 1),  # more than the released net
    (lambda s: s.psp_transfers[0].update(destination="acct_other"), 1),  # to another account
    (lambda s: s.psp_transfers[0].update(currency="eur"), 1),  # in another currency
    (lambda s: s.psp_transfers[0].update(metadata={}), 1),  # a transfer naming no order
    (lambda s: s.psp_transfers.append(psp_transfer("tr_3", "po_3", 720, "EUR", "acct_s1")), 1),  # a held order
    (lambda s: s.psp_transfers.clear() or s.psp_account_balances.clear(), 1),  # TRANSFERRED, the PSP has none
    (lambda s: s.payouts[1].update(transfer_id="tr_9"), 1),  # TRANSFERRED naming a transfer the PSP lacks
    (lambda s: s.psp_account_balances["acct_s2"].update(usd=400), 1),  # the account holds more than we sent
    # every released order final, waiting for its seller, or dead-lettered
    (lambda s: s.released_order_ids.append("po_3"), 2),  # a release answered 2xx that did not happen
    (lambda s: s.payouts[0].pop("awaiting_seller"), 2),  # stuck RELEASED with nothing to wake it
    (lambda s: s.payouts[1].update(payout_status="TRANSFERRING"), 2),  # stuck TRANSFERRING
    (lambda s: s.payouts[2].update(auto_release_at="2026-01-01T00:00:00.000000Z")
     or setattr(s, "now", "2026-01-02T00:00:00.000000Z"), 2),  # never auto-released
    # no pay-out status backwards; FAILED -> RELEASED only through `ops payouts retry`
    (lambda s: s.observed_payout_statuses.update(po_2=["TRANSFERRED", "RELEASED"]), 5),
    (lambda s: s.observed_payout_statuses.update(po_2=["TRANSFERRING", "RELEASED"]), 5),
    (lambda s: s.observed_payout_statuses.update(po_2=["FAILED", "RELEASED", "TRANSFERRED"]), 5),
])
def test_each_violation_is_reported_under_its_invariant(change, number):
    assert number in violations(mutate(change))


def test_a_failed_attempt_before_the_charge_that_succeeded_is_not_a_second_charge():
    # Given a declined first attempt and a successful one for the same charge (a PaymentIntent retried)
    snap = mutate(lambda s: s.psp_charges.insert(0, charge("ch_0", "pi_1", "chk_1", 1250, "USD", "failed")))
    # Then only successful charges count
    assert violations(snap) == {}


def test_without_the_cards_the_outcome_check_is_left_out():
    snap = mutate(lambda s: s.card_succeeds.clear() or s.card_succeeds.update(chk_9=True))
    assert violations(snap) == {}


def test_an_open_order_whose_charge_is_dead_lettered_is_accounted_for():
    # Given an order still EXECUTING whose charge sits in the dead-letter queue (its message names all its orders)
    def stuck(s):
        s.orders.append(order("po_5", "chk_3", "s1", 100, "USD", "EXECUTING"))
        s.accepted_order_ids.append("po_5")
    snap = mutate(stuck)
    assert 2 in violations(snap)  # in no queue: a violation
    snap.dead_letters.append({"charge_key": "chk_3#USD", "step": "sweeper", "payment_order_ids": ["po_5"]})
    assert 2 not in violations(snap)  # dead-lettered with an alarm: allowed


def test_a_released_order_stuck_but_dead_lettered_is_accounted_for():
    # Given a released order TRANSFERRING whose transfer message sits in the pay-outs' dead-letter queue
    snap = mutate(lambda s: s.payouts[1].update(payout_status="TRANSFERRING"))
    assert 2 in violations(snap)
    snap.dead_letters.append({"payment_order_id": "po_2", "step": "transfer"})
    assert 2 not in violations(snap)


def test_a_failed_pay_out_retried_by_ops_may_move_back_to_released_once():
    # Given po_2 FAILED (its account restricted), then retried by `ops payouts retry` and transferred
    snap = mutate(lambda s: s.observed_payout_statuses.update(
        po_2=["HELD", "RELEASED", "TRANSFERRING", "FAILED", "RELEASED", "TRANSFERRING", "TRANSFERRED"]))
    assert 5 in violations(snap)  # not retried by ops: a move back
    snap.retried_payouts.append("po_2")
    assert violations(snap) == {}


def test_a_held_pay_out_not_yet_due_for_auto_release_is_not_late():
    snap = mutate(lambda s: s.payouts[2].update(auto_release_at="2026-01-03T00:00:00.000000Z"))
    snap.now = "2026-01-02T00:00:00.000000Z"
    assert violations(snap) == {}


def test_without_the_psp_balances_the_account_check_is_left_out():
    assert violations(mutate(lambda s: s.psp_account_balances.clear())) == {}


def with_a_failed_refund():
    """consistent(), and a refund of 3.00 EUR of po_3 that the PSP failed: nothing refunded anywhere."""
    snap = consistent()
    snap.refunds = [{"refund_id": "rf_1", "payment_order_id": "po_3", "amount_minor": 300, "refund_status": "FAILED"}]
    snap.accepted_refunds = {"rf_1": "po_3"}
    return snap


def refund_change(change):
    snap = with_a_failed_refund()
    change(snap)
    return snap


def test_a_failed_refund_refunded_nowhere_passes():
    assert violations(with_a_failed_refund()) == {}


@pytest.mark.parametrize(("change", "number"), [
    (lambda s: s.psp_charges[1].update(amount_refunded=300), 1),  # the PSP refunded what we call FAILED
    (lambda s: s.refunds[0].update(refund_status="SUCCEEDED", amount_minor=900)
     or s.psp_charges[1].update(amount_refunded=900), 1),  # past the order's amount (and the charge's)
    (lambda s: s.refunds.append({"refund_id": "rf_2", "payment_order_id": "po_3", "amount_minor": 600,
                                 "refund_status": "PENDING"}) or s.refunds[0].update(refund_status="PENDING")
     or s.dead_letters.extend([{"refund_id": "rf_1"}, {"refund_id": "rf_2"}]), 1),  # two commit more than 800
    (lambda s: s.refunds[0].update(refund_status="PENDING"), 2),  # accepted, never final, no dead letter
    # SUCCEEDED, but its reversal and books never finished (the worker stopped after the status)
    (lambda s: s.refunds[0].update(refund_status="SUCCEEDED") or s.psp_charges[1].update(amount_refunded=300), 2),
    (lambda s: s.accepted_refunds.update(rf_9="po_1"), 2),  # a 202 for a refund never stored
    (lambda s: s.refund_answers_wrong.append("rf_1: two answers of one refund differ"), 6),
])
def test_each_refund_violation_is_reported_under_its_invariant(change, number):
    assert number in violations(refund_change(change))


def test_a_pending_refund_in_its_dead_letter_queue_is_accounted_for():
    snap = refund_change(lambda s: s.refunds[0].update(refund_status="PENDING"))
    snap.dead_letters.append({"refund_id": "rf_1"})
    assert violations(snap) == {}


def test_disputes_are_drawn_only_among_charges_our_books_hold_settled():
    from verification.disputes import plan_disputes

    charges = [{"charge_id": f"ch_{n}", "status": "succeeded", "amount": 1000, "amount_refunded": 0,
                "metadata": {"charge_key": f"chk_{n}#USD"}} for n in range(40)]
    everything = {c["charge_id"] for c in plan_disputes(charges, seed=1, rate=1.0)}
    settled = {f"chk_{n}#USD" for n in range(0, 40, 2)}
    drawn = {c["charge_id"] for c in plan_disputes(charges, seed=1, rate=1.0, settled=settled)}
    assert len(everything) == 40 and drawn == {f"ch_{n}" for n in range(0, 40, 2)}


def test_the_dead_letter_check_reads_every_message_of_a_queue_and_leaves_them_there():
    # A receive with visibility 0 leaves its messages first in line: a peek that way saw ten of a queue's 44
    import boto3
    from moto import mock_aws

    from verification.invariants import peek_queue

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        for n in range(25):
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"payment_order_id": f"po_{n}"}))
        first, again = peek_queue(sqs, url), peek_queue(sqs, url)
        assert sorted(m["payment_order_id"] for m in first) == sorted(f"po_{n}" for n in range(25))
        assert len(again) == 25


# -- invariant 8: failover (issue 18): no charge at both PSPs, each order charged where it records ----------------


def adyen_payment(reference, charge_key, value, currency, result="Authorised", refunded=0):
    """A payment as the Adyen sandbox records it (its merchantReference is our charge key)."""
    return {"pspReference": reference, "merchantReference": charge_key, "resultCode": result,
            "amount": {"currency": currency, "value": value}, "refunded": refunded, "cancelled": False}


def with_adyen():
    """consistent(), plus chk_3 failed over to Adyen (one EUR order of 9.00, SUCCESS, wallet and ledger as any
    pay-in) and chk_4 at Adyen with a declined card (FAILED, refused there)."""
    snap = consistent()
    adyen = {"psp": "adyen"}
    snap.orders += [{**order("po_5", "chk_3", "s2", 900, "EUR", "SUCCESS"), **adyen, "psp_reference": "AD1"},
                    {**order("po_6", "chk_4", "s1", 300, "EUR", "FAILED"), **adyen}]
    snap.ledger.append(payin("po_5", "s2", 900, "EUR"))
    snap.wallet.append(balance("s2", 2, "EUR", pending=900))
    snap.adyen_payments = [adyen_payment("AD1", "chk_3#EUR", 900, "EUR"),
                           adyen_payment("AD2", "chk_4#EUR", 300, "EUR", result="Refused")]
    snap.card_succeeds.update({"chk_3": True, "chk_4": False})
    return snap


def test_orders_charged_at_adyen_by_failover_pass_against_adyens_books():
    assert violations(with_adyen()) == {}


def test_an_order_recording_adyen_in_a_run_without_adyen_is_reported():
    snap = with_adyen()
    snap.adyen_payments = None
    assert violations(snap) == {8: ["po_5: records psp adyen but the run had no Adyen",
                                    "po_6: records psp adyen but the run had no Adyen"]}


@pytest.mark.parametrize(("change", "expected"), [
    # the same charge paid at Stripe too
    (lambda s: s.psp_charges.append(charge("ch_7", "pi_7", "chk_3", 900, "EUR")),
     "chk_3#EUR: paid at both PSPs (Stripe ch_7, Adyen AD1)"),
    # authorised twice at Adyen
    (lambda s: s.adyen_payments.append(adyen_payment("AD3", "chk_3#EUR", 900, "EUR")),
     "chk_3#EUR: 2 authorised Adyen payments (AD1, AD3)"),
    # Adyen charged another amount
    (lambda s: s.adyen_payments[0]["amount"].update(value=901), "chk_3#EUR: Adyen charged 9.01 EUR (AD1)"),
    # a declined card authorised after all, its orders FAILED
    (lambda s: s.adyen_payments[1].update(resultCode="Authorised"), "po_6: FAILED but Adyen authorised chk_4#EUR"),
    # SUCCESS naming another payment
    (lambda s: s.orders[4].update(psp_reference="AD9"), "po_5: SUCCESS naming AD9, not Adyen's payment"),
    # SUCCESS at Adyen with no payment there
    (lambda s: s.adyen_payments.pop(0), "po_5: SUCCESS at Adyen with 0 authorised payments of chk_3#EUR"),
    # a Stripe-recorded checkout authorised at Adyen
    (lambda s: s.adyen_payments.append(adyen_payment("AD4", "chk_1#EUR", 800, "EUR")),
     "chk_1#EUR: authorised at Adyen (AD4) but its orders record ['stripe']"),
    # Adyen refunded what no refund of ours says
    (lambda s: s.adyen_payments[0].update(refunded=100), "chk_3#EUR: Adyen refunded 100, our SUCCEEDED refunds say 0"),
])
def test_each_failover_violation_is_reported_under_invariant_8(change, expected):
    snap = with_adyen()
    change(snap)
    found = violations(snap)
    assert any(v.startswith(expected) for v in found.get(8, [])), found


def test_a_succeeded_adyen_refund_matches_what_adyen_refunded():
    snap = with_adyen()
    snap.adyen_payments[0]["refunded"] = 400
    snap.refunds = [{"refund_id": "rf_1", "payment_order_id": "po_5", "amount_minor": 400,
                     "refund_status": "SUCCEEDED", "finished_at": "2026-12-07T00:00:00Z"}]
    assert 8 not in violations(snap)


def never_sent(snap, outage=True):
    """chk_5: a Stripe-token checkout (a card that succeeds) parked through the outage and never sent: after
    psp_unavailable_fail_after_s its order ends FAILED psp_unavailable, with nothing at either PSP."""
    snap.psp_outage = outage
    snap.orders.append({**order("po_7", "chk_5", "s1", 600, "USD", "FAILED"), "psp": "stripe",
                        "failure_code": "psp_unavailable", "failure_reason": "stripe was unavailable for 905 s"})
    snap.card_succeeds["chk_5"] = True
    return snap


def test_a_charge_never_sent_during_an_outage_may_fail_psp_unavailable_with_nothing_charged():
    assert violations(never_sent(with_adyen())) == {}


def test_psp_unavailable_without_an_outage_is_a_card_that_succeeds_failing():
    found = violations(never_sent(with_adyen(), outage=False))
    assert list(found) == [1] and found[1][0].startswith("po_7: FAILED (psp_unavailable"), found


@pytest.mark.parametrize(("psp", "invariant", "expected"), [
    ("stripe", 1, "po_7: FAILED but the PSP charged chk_5#USD (ch_9)"),
    ("adyen", 8, "chk_5#USD: authorised at Adyen (AD9) but its orders record ['stripe']"),
])
def test_psp_unavailable_is_accepted_only_when_no_psp_charged_it(psp, invariant, expected):
    snap = never_sent(with_adyen())
    if psp == "stripe":
        snap.psp_charges.append(charge("ch_9", "pi_9", "chk_5", 600, "USD"))
    else:
        snap.adyen_payments.append(adyen_payment("AD9", "chk_5#USD", 600, "USD"))
    found = violations(snap)
    assert any(v.startswith(expected) for v in found.get(invariant, [])), found


def test_a_parked_stripe_charge_moved_to_adyen_is_caught_as_paid_at_both_psps():
    # mutation-style: the one thing failover must never do. chk_1's EUR charge (a Stripe token, paid at Stripe once
    # Stripe was back) was also placed at Adyen while Stripe's breaker was open, the order still recording Stripe.
    snap = with_adyen()
    snap.adyen_payments.append(adyen_payment("AD5", "chk_1#EUR", 800, "EUR"))
    found = violations(snap)
    assert list(found) == [8], found
    assert found[8][0] == "chk_1#EUR: paid at both PSPs (Stripe ch_2, Adyen AD5)", found
    assert any(v.startswith("chk_1#EUR: authorised at Adyen (AD5) but its orders record ['stripe']") for v in found[8])


def test_a_failed_over_order_charged_at_stripe_as_well_is_reported_twice_over():
    # the reverse: an Adyen order (chk_3) whose charge key Stripe charged too; invariant 1 sees a Stripe charge no
    # Stripe order accounts for, invariant 8 the charge at both PSPs
    snap = with_adyen()
    snap.psp_charges.append(charge("ch_8", "pi_8", "chk_3", 900, "EUR"))
    found = violations(snap)
    assert "chk_3#EUR: paid at both PSPs (Stripe ch_8, Adyen AD1)" in found[8], found
    assert any(v.startswith("chk_3#EUR: charged 900 (ch_8) but its orders sum to 0") for v in found[1]), found
