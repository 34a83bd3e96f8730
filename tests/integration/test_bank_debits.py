"""SEPA and ACH Direct Debit (issue 17 point 3) through the workflow's steps, against moto and the PSP sandbox.

The storefront sends the PaymentMethod Stripe.js made from the buyer's IBAN or bank account, and the buyer's mandate
acceptance. The PaymentIntent is `processing` for days: the orders stay EXECUTING, the charge parked until the bank's
answer comes by webhook (or the backstop recheck, days later), then the usual finalize decides.
"""

import json
from datetime import timedelta

import boto3
import pytest

from functions.executor import sweeper
from functions.payment import service
from functions.payment.schemas import PaymentRequest
from functions.shared import clock
from functions.shared.config import settings
from functions.shared.tables import PaymentTables, PayoutsTable
from functions.webhooks import processor
from psp_sandbox import state as sandbox_state
from psp_sandbox.catalogue import ACH_ACCOUNTS, SEPA_IBANS
from tests.integration.support import work_of
from tests.integration.test_executor_checkout import begin, run_charge
from tests.integration.test_steps import create_machine

MANDATE = {"customer_acceptance": {"type": "online",
                                   "online": {"ip_address": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11)"}}}


@pytest.fixture
def workflow(sandbox):
    create_machine(boto3.client("stepfunctions", region_name="us-east-1"))
    return sandbox


def request_of(checkout_id, method, currency, token="pm_1", **extra):
    return PaymentRequest.model_validate({
        "buyer_info": {"buyer_id": "b"}, "checkout_id": checkout_id,
        "payment_method": {"type": method, "token": token, "mandate_data": MANDATE, **extra},
        "payment_orders": [{"seller_account": seller, "amount": amount, "currency": currency,
                            "payment_order_id": f"{checkout_id}_{n}"}
                           for n, (seller, amount) in enumerate((("seller_a", "12.34"), ("seller_b", "5.00")))]})


def debiting(server, checkout_id, method, currency, account):
    """A checkout paid by debit, its first attempt run: parked on `processing`."""
    pm = server.state.create_payment_method(card=account, exp_month=None, exp_year=None, metadata={},
                                            billing_details={"name": "Jenny Rosen"})
    service.place_checkout(request_of(checkout_id, method, currency, token=pm.id))
    assert run_charge(begin(checkout_id, currency)) == {"charge_status": "EXECUTING", "psp_status": "processing"}
    return PaymentTables.from_settings().get_charge(f"{checkout_id}#{currency}")


def bank_answers(server):
    server.advance_clock(sandbox_state.DEBIT_PROCESSING_SECONDS + 1)
    server.state.settle_debits()


def delivered(server, pi_id, event_type):
    [event] = [e for e in server.sandbox.webhooks.events.values() if e.type == event_type and e.obj.get("id") == pi_id]
    return json.dumps(event.to_stripe())


def redrive(checkout_id, currency):
    assert sweeper.sweep()["redriven"] == 1
    charge = PaymentTables.from_settings().get_charge(f"{checkout_id}#{currency}")
    return run_charge(work_of(checkout_id, currency, attempt=int(charge["attempts"])))


def orders_of(checkout_id):
    tables = PaymentTables.from_settings()
    return [tables.get_order(f"{checkout_id}_{n}") for n in range(2)]


def test_a_sepa_debit_waits_days_for_the_bank_then_succeeds_by_webhook(workflow):
    charge = debiting(workflow, "chk_sepa", "sepa_debit", "EUR", SEPA_IBANS["AT611904300234573201"])
    intent = workflow.state.payment_intent(charge["psp_reference"])
    assert intent.payment_method_types == ["sepa_debit"] and intent.mandate_data == MANDATE
    waited = clock.parse_iso(charge["due_at"]) - clock.parse_iso(charge["updated_at"])
    assert waited == timedelta(seconds=settings().debit_recheck_s)  # not polled every 15 minutes for days
    clock.advance(2 * 86400)
    assert sweeper.sweep()["redriven"] == 0

    bank_answers(workflow)
    assert processor.process(delivered(workflow, intent.id, "payment_intent.succeeded")) == "redrive_due"
    assert redrive("chk_sepa", "EUR")["charge_status"] == "SUCCESS"
    for order in orders_of("chk_sepa"):
        assert (order["payment_order_status"], order["wallet_updated"], order["ledger_updated"]) == (
            "SUCCESS", True, True)
        assert PayoutsTable.from_settings().get(order["payment_order_id"])["payout_status"] == "HELD"


def test_an_ach_debit_the_bank_refuses_ends_failed_with_the_banks_code(workflow):
    charge = debiting(workflow, "chk_ach", "us_bank_account", "USD", ACH_ACCOUNTS["000111111113"])
    bank_answers(workflow)
    assert processor.process(delivered(workflow, charge["psp_reference"], "payment_intent.payment_failed")) == (
        "redrive_due")
    assert redrive("chk_ach", "USD")["charge_status"] == "FAILED"
    assert {(o["payment_order_status"], o["failure_code"]) for o in orders_of("chk_ach")} == {
        ("FAILED", "account_closed")}
    assert not any(o.get("wallet_updated") for o in orders_of("chk_ach"))


def test_a_lost_webhook_is_made_up_by_the_recheck_days_later(workflow):
    debiting(workflow, "chk_quiet", "sepa_debit", "EUR", SEPA_IBANS["AT611904300234573201"])
    bank_answers(workflow)  # the bank answered; its webhook never reached us
    clock.advance(settings().debit_recheck_s + 1)
    assert redrive("chk_quiet", "EUR")["charge_status"] == "SUCCESS"


@pytest.mark.parametrize(("method", "currency", "extra", "code"), [
    ("sepa_debit", "USD", {}, "payment_method_currency_not_supported"),
    ("us_bank_account", "EUR", {}, "payment_method_currency_not_supported"),
    ("sepa_debit", "EUR", {"mandate_data": None}, "mandate_data_missing"),
    ("sepa_debit", "EUR", {"mandate_data": {"customer_acceptance": {"type": "offline"}}}, "literal_error"),
    ("sepa_debit", "EUR", {"mandate_data": {"customer_acceptance": {"type": "online", "online": {
        "ip_address": "not-an-ip", "user_agent": "x"}}}}, "ip_any_address"),
])
def test_a_debit_without_a_valid_mandate_or_in_another_currency_is_refused(method, currency, extra, code):
    body = {"type": method, "token": "pm_1", "mandate_data": MANDATE, **extra}
    with pytest.raises(ValueError) as refused:
        PaymentRequest.model_validate({
            "buyer_info": {"buyer_id": "b"}, "checkout_id": "chk_x",
            "payment_method": {k: v for k, v in body.items() if v is not None},
            "payment_orders": [{"seller_account": "s", "amount": "5.00", "currency": currency,
                                "payment_order_id": "o"}]})
    assert code in {e["type"] for e in refused.value.errors()}


def test_a_card_may_not_carry_a_mandate():
    with pytest.raises(ValueError, match="mandate_data"):
        PaymentRequest.model_validate({
            "buyer_info": {"buyer_id": "b"}, "checkout_id": "chk_c",
            "payment_method": {"type": "card", "token": "pm_card_visa", "mandate_data": MANDATE},
            "payment_orders": [{"seller_account": "s", "amount": "5.00", "currency": "EUR",
                                "payment_order_id": "o"}]})


def test_a_debit_the_bank_returns_after_success_is_refunded_with_the_sellers_share(workflow):
    from functions.executor import refund as refund_worker
    from functions.shared.tables import RefundsTable, WalletTable

    charge = debiting(workflow, "chk_ret", "us_bank_account", "USD", ACH_ACCOUNTS["000123456789"])
    bank_answers(workflow)
    pi_id = charge["psp_reference"]
    assert processor.process(delivered(workflow, pi_id, "payment_intent.succeeded")) == "redrive_due"
    assert redrive("chk_ret", "USD")["charge_status"] == "SUCCESS"
    assert WalletTable.from_settings().balances("seller_a")["USD"]["pending_minor"] == 1234

    workflow.state.return_debit(pi_id, "insufficient_funds")  # R01, days after the success
    body = delivered(workflow, pi_id, "payment_intent.payment_failed")
    assert processor.process(body) == "debit_returned"
    refunds = RefundsTable.from_settings()
    for order_id in ("chk_ret_0", "chk_ret_1"):
        returned = refunds.get(f"returned:{order_id}")
        assert returned["taken_back_by_psp"] == "insufficient_funds"
        assert refund_worker.drive(returned["refund_id"]) in ("succeeded", "completed", "complete")
        assert refunds.get(f"returned:{order_id}")["refund_status"] == "SUCCEEDED"
    # the seller's held share left the wallet with the money; no Refund was asked of the PSP
    assert WalletTable.from_settings().balances("seller_a")["USD"]["pending_minor"] == 0
    assert not workflow.state.refunds
    # the same event again (or a replay of the webhook) refunds nothing twice
    assert processor.process(body) == processor.DUPLICATE
    from functions.webhooks import payments
    from functions.webhooks.events import WebhookEvent
    assert payments.payment_intent_event(WebhookEvent.model_validate_json(body)) == "debit_returned"
    assert refunds.get("returned:chk_ret_0")["refund_status"] == "SUCCEEDED"


def test_a_forged_or_stale_failure_event_for_a_succeeded_debit_changes_nothing(workflow):
    from functions.shared.tables import RefundsTable
    from functions.webhooks import payments
    from functions.webhooks.events import WebhookEvent

    charge = debiting(workflow, "chk_forged", "sepa_debit", "EUR", SEPA_IBANS["AT611904300234573201"])
    bank_answers(workflow)
    assert processor.process(delivered(workflow, charge["psp_reference"], "payment_intent.succeeded")) == (
        "redrive_due")
    assert redrive("chk_forged", "EUR")["charge_status"] == "SUCCESS"
    forged = json.loads(delivered(workflow, charge["psp_reference"], "payment_intent.succeeded"))
    forged.update(id="evt_forged", type="payment_intent.payment_failed")
    assert payments.payment_intent_event(WebhookEvent.model_validate(forged)) == "already_final"  # the PSP says paid
    assert RefundsTable.from_settings().get("returned:chk_forged_0") is None


def test_a_refund_accepted_before_the_return_but_refused_after_it_is_taken_back_too(workflow):
    # A partial refund is accepted, the bank returns the whole debit before the worker reaches Stripe, and Stripe
    # refuses that refund then: it must not end FAILED (freeing 5.00 the platform no longer holds).
    from functions.executor import refund as refund_worker
    from functions.payment import refunds as refund_api
    from functions.payment.schemas import RefundRequest
    from functions.shared import queues
    from functions.shared.tables import RefundsTable, WalletTable

    charge = debiting(workflow, "chk_part", "us_bank_account", "USD", ACH_ACCOUNTS["000123456789"])
    bank_answers(workflow)
    processor.process(delivered(workflow, charge["psp_reference"], "payment_intent.succeeded"))
    assert redrive("chk_part", "USD")["charge_status"] == "SUCCESS"
    sent = []
    real_send = queues.enqueue_refund
    queues.enqueue_refund = lambda refund_id, *a, **k: sent.append(refund_id)  # the worker is not reached yet
    try:
        refund_api.create_refund("chk_part_0", RefundRequest(refund_id="r1", amount="5.00"))
        workflow.state.return_debit(charge["psp_reference"], "insufficient_funds")
        assert processor.process(delivered(workflow, charge["psp_reference"], "payment_intent.payment_failed")) == (
            "debit_returned")
    finally:
        queues.enqueue_refund = real_send
    refunds = RefundsTable.from_settings()
    assert refunds.get("returned:chk_part_0")["amount_minor"] == 734  # what remained beside r1
    for refund_id in ("r1", "returned:chk_part_0", "returned:chk_part_1"):
        refund_worker.drive(refund_id)
        assert refunds.get(refund_id)["refund_status"] == "SUCCEEDED", refund_id
    assert not workflow.state.refunds  # Stripe made none: r1 was refused, the return took its amount
    order = PaymentTables.from_settings().get_order("chk_part_0")
    assert int(order["refunded_minor"]) == 1234
    assert WalletTable.from_settings().balances("seller_a")["USD"]["pending_minor"] == 0


def test_a_debit_waits_past_max_attempts_until_its_bank_answers(workflow):
    debiting(workflow, "chk_slow", "sepa_debit", "EUR", SEPA_IBANS["AT611904300234573201"])
    for _ in range(settings().max_attempts + 1):  # every backstop look-up finds it still processing
        clock.advance(settings().debit_recheck_s + 1)
        assert redrive("chk_slow", "EUR")["charge_status"] == "EXECUTING"
    bank_answers(workflow)  # day 25: the bank answers
    clock.advance(settings().debit_recheck_s + 1)
    assert redrive("chk_slow", "EUR")["charge_status"] == "SUCCESS"


def test_a_debit_never_answered_is_dead_lettered_after_the_longest_wait(workflow):
    debiting(workflow, "chk_never", "sepa_debit", "EUR", SEPA_IBANS["AT611904300234573201"])
    created = clock.parse_iso(PaymentTables.from_settings().get_charge("chk_never#EUR")["created_at"])
    for _ in range(20):
        clock.advance(settings().debit_recheck_s + 1)
        counts = sweeper.sweep()
        if counts["dead_lettered"]:
            break
        charge = PaymentTables.from_settings().get_charge("chk_never#EUR")
        run_charge(work_of("chk_never", "EUR", attempt=int(charge["attempts"])))
    # a person looks once the longest wait has passed, not after max_attempts look-ups
    assert counts["dead_lettered"] == 1
    assert clock.now() >= created + timedelta(seconds=settings().debit_max_wait_s)
    assert clock.now() < created + timedelta(seconds=settings().debit_max_wait_s + settings().debit_recheck_s + 2)


def test_the_buyers_mandate_acceptance_stays_out_of_the_workflow_and_goes_once_final(workflow):
    charge = debiting(workflow, "chk_priv", "sepa_debit", "EUR", SEPA_IBANS["AT611904300234573201"])
    assert charge["mandate_data"] == MANDATE  # sent to Stripe from here, on every retry of the create
    assert "mandate_data" not in work_of("chk_priv", "EUR").model_dump_json()
    # the same checkout retried from another IP address is the same checkout, not a conflict
    again = request_of("chk_priv", "sepa_debit", "EUR", token=charge["payment_method"], mandate_data={
        "customer_acceptance": {"type": "online", "online": {"ip_address": "192.0.2.1", "user_agent": "x"}}})
    assert service.place_checkout(again)[1] is True
    bank_answers(workflow)
    processor.process(delivered(workflow, charge["psp_reference"], "payment_intent.succeeded"))
    assert redrive("chk_priv", "EUR")["charge_status"] == "SUCCESS"
    assert "mandate_data" not in PaymentTables.from_settings().get_charge("chk_priv#EUR")


def test_a_deciding_event_for_a_debit_whose_attempt_may_run_comes_back_later(workflow):
    from functions.webhooks import payments
    from functions.webhooks.events import WebhookEvent

    charge = debiting(workflow, "chk_busy", "us_bank_account", "USD", ACH_ACCOUNTS["000123456789"])
    bank_answers(workflow)
    event = WebhookEvent.model_validate_json(delivered(workflow, charge["psp_reference"], "payment_intent.succeeded"))
    assert payments.payment_intent_event(event) == "redrive_due"
    with pytest.raises(payments.EventNotYetApplicable):  # brought forward: an attempt may start any moment
        payments.payment_intent_event(event)


def test_an_account_to_verify_by_microdeposits_waits_days_for_the_buyer_not_the_3ds_half_hour(workflow):
    # Stripe answers requires_action / verify_with_microdeposits for a US account it could not verify at once (the
    # sandbox's test accounts are all verified at once, so this answer is given to finalize as the executor would)
    from types import SimpleNamespace

    from functions.payment import finalize
    from functions.shared import psp

    intent = SimpleNamespace(id="pi_micro", status="requires_action", latest_charge=None, client_secret="pi_s",
                             next_action=SimpleNamespace(type="verify_with_microdeposits", verify_with_microdeposits=(
                                 SimpleNamespace(hosted_verification_url="https://payments.stripe.com/microdeposit/x"))))
    answer = psp.PspClient._result_of(intent)
    assert (answer.outcome, answer.action, answer.redirect_url) == (
        "pending", "verify_with_microdeposits", "https://payments.stripe.com/microdeposit/x")
    service.place_checkout(request_of("chk_micro", "us_bank_account", "USD", token="pm_micro"))
    work = begin("chk_micro", "USD")
    assert finalize.finalize({**work.model_dump(), "charge": answer.as_dict()})["charge_status"] == "EXECUTING"
    checkout = service.get_checkout("chk_micro")
    assert checkout.next_action.model_dump(exclude_none=True) == {
        "type": "verify_with_microdeposits", "url": "https://payments.stripe.com/microdeposit/x"}
    charge = PaymentTables.from_settings().get_charge("chk_micro#USD")
    waited = clock.parse_iso(charge["action_expires_at"]) - clock.parse_iso(charge["updated_at"])
    assert waited == timedelta(seconds=settings().microdeposits_timeout_s)
