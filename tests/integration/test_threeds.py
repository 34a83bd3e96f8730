"""3-D Secure and wallets (issue 17) through the workflow's steps, against moto and the PSP sandbox.

A charge whose PaymentIntent answers requires_action waits for the buyer: the orders stay EXECUTING and show
next_action (the client secret for Stripe.js) until the challenge's deadline. The sandbox's admin call completes or
fails the challenge and emits the webhook Stripe would send; the processor brings the charge forward, the sweeper
re-drives it and the usual finalize decides. Past the deadline the next attempt cancels the PaymentIntent.
"""

import json

import boto3
import pytest

from functions.executor import sweeper
from functions.payment import service
from functions.shared import clock, psp
from functions.shared.config import settings
from functions.shared.tables import PaymentTables, PayoutsTable
from functions.webhooks import processor
from psp_sandbox.errors import StripeApiError
from tests.integration.support import place, work_of
from tests.integration.test_executor_checkout import begin, run_charge
from tests.integration.test_steps import create_machine

THREEDS = "pm_card_threeDSecure2Required"


@pytest.fixture
def workflow(sandbox):
    create_machine(boto3.client("stepfunctions", region_name="us-east-1"))
    return sandbox


def challenged(checkout_id):
    """A checkout paid with a 3-D Secure card, its first attempt run: parked on requires_action."""
    place(checkout_id, card=THREEDS)
    result = run_charge(begin(checkout_id, "USD"))
    assert result == {"charge_status": "EXECUTING", "psp_status": "requires_action"}
    return PaymentTables.from_settings().get_charge(f"{checkout_id}#USD")["psp_reference"]


def events_of(server, pi_id, event_type):
    return [e for e in server.sandbox.webhooks.events.values() if e.type == event_type and e.obj.get("id") == pi_id]


def delivered(server, pi_id, event_type):
    """The sandbox's event of that type for the PaymentIntent, as the receiver would queue it."""
    [event] = events_of(server, pi_id, event_type)
    return json.dumps(event.to_stripe())


def redrive(checkout_id):
    """The sweeper's run: a due charge gets its next attempt, which the workflow runs."""
    assert sweeper.sweep()["redriven"] == 1
    charge = PaymentTables.from_settings().get_charge(f"{checkout_id}#USD")
    return run_charge(work_of(checkout_id, attempt=int(charge["attempts"])))


def orders_of(checkout_id):
    tables = PaymentTables.from_settings()
    return [tables.get_order(f"{checkout_id}_{n}") for n in range(2)]


def test_a_challenge_shows_next_action_with_the_client_secret_and_waits_until_its_deadline(workflow):
    pi_id = challenged("chk_3ds")
    secret = workflow.state.to_json(workflow.state.payment_intent(pi_id))["client_secret"]
    checkout = service.get_checkout("chk_3ds")
    assert checkout.next_action is not None
    assert checkout.next_action.model_dump(exclude_none=True) == {"type": "use_stripe_sdk", "client_secret": secret}
    assert [(o.payment_order_status, o.next_action.client_secret) for o in checkout.payment_orders] == [
        ("EXECUTING", secret), ("EXECUTING", secret)]
    charge = PaymentTables.from_settings().get_charge("chk_3ds#USD")
    waited = clock.parse_iso(charge["action_expires_at"]) - clock.parse_iso(charge["updated_at"])
    assert waited.total_seconds() == settings().threeds_timeout_s
    assert charge["due_at"] == charge["action_expires_at"]
    # not polled meanwhile: 29 minutes on, the sweeper has nothing to do
    clock.advance(29 * 60)
    assert sweeper.sweep()["redriven"] == 0


def test_a_completed_challenge_succeeds_through_the_webhook_with_wallet_ledger_and_payout(workflow):
    pi_id = challenged("chk_ok")
    workflow.state.resolve_payment_intent(pi_id, "succeeded")  # POST /_sandbox/payment_intents/{id}/resolve
    body = delivered(workflow, pi_id, "payment_intent.succeeded")
    assert processor.process(body) == "redrive_due"
    assert redrive("chk_ok")["charge_status"] == "SUCCESS"
    for order in orders_of("chk_ok"):
        assert order["payment_order_status"] == "SUCCESS"
        assert order["wallet_updated"] and order["ledger_updated"]
        assert PayoutsTable.from_settings().get(order["payment_order_id"])["payout_status"] == "HELD"
    assert service.get_checkout("chk_ok").next_action is None
    # the client secret is not kept once the charge is final
    assert not any("next_action" in o for o in orders_of("chk_ok"))
    assert "next_action" not in PaymentTables.from_settings().get_charge("chk_ok#USD")
    assert service.get_checkout("chk_ok").is_payment_done
    # the same event again, and the older requires_action one arriving last, change nothing
    assert processor.process(body) == processor.DUPLICATE
    assert processor.process(delivered(workflow, pi_id, "payment_intent.requires_action")) == "already_final"
    assert [o["payment_order_status"] for o in orders_of("chk_ok")] == ["SUCCESS", "SUCCESS"]


def test_a_failed_challenge_ends_failed_with_the_psps_reason(workflow):
    pi_id = challenged("chk_no")
    workflow.state.resolve_payment_intent(pi_id, "failed")
    assert processor.process(delivered(workflow, pi_id, "payment_intent.payment_failed")) == "redrive_due"
    assert redrive("chk_no")["charge_status"] == "FAILED"
    assert {(o["payment_order_status"], o["failure_code"]) for o in orders_of("chk_no")} == {
        ("FAILED", "payment_intent_authentication_failure")}
    assert not any(o.get("wallet_updated") or "next_action" in o for o in orders_of("chk_no"))
    # the PaymentIntent is closed: the buyer's browser still holds its client secret, and Stripe.js confirming
    # it with another card must not charge for orders reported FAILED
    intent = workflow.state.payment_intent(pi_id)
    assert (intent.status, intent.cancellation_reason) == ("canceled", "requested_by_customer")
    with pytest.raises(StripeApiError, match="status is canceled"):
        workflow.state.confirm_payment_intent(pi_id, payment_method="pm_card_visa", idempotency_key=None)
    # a later attempt (a duplicate re-drive) reads the same failure from the cancelled PaymentIntent
    again = psp.client().retrieve(pi_id, work_of("chk_no"))
    assert (again.outcome, again.failure_code) == ("failed", "payment_intent_authentication_failure")


def test_a_failed_challenge_then_another_card_before_the_cancel_is_a_success(workflow):
    pi_id = challenged("chk_other")
    workflow.state.resolve_payment_intent(pi_id, "failed")
    work = work_of("chk_other")
    failed = psp.client().retrieve(pi_id, work)
    assert failed.outcome == "failed"
    # the buyer confirms with another card (Stripe.js, the client secret) before the executor's cancel
    workflow.state.confirm_payment_intent(pi_id, payment_method="pm_card_visa", idempotency_key=None)
    closed = psp.client().close_failed(failed, work)  # Stripe refuses the cancel: the PaymentIntent succeeded
    assert (closed.outcome, closed.psp_status) == ("succeeded", "succeeded")
    assert processor.process(delivered(workflow, pi_id, "payment_intent.succeeded")) == "redrive_due"
    assert redrive("chk_other")["charge_status"] == "SUCCESS"


def test_an_abandoned_challenge_is_cancelled_at_the_psp_and_ends_failed(workflow):
    pi_id = challenged("chk_gone")
    clock.advance(settings().threeds_timeout_s + 1)
    assert redrive("chk_gone")["charge_status"] == "FAILED"
    intent = workflow.state.payment_intent(pi_id)
    assert (intent.status, intent.cancellation_reason) == ("canceled", "abandoned")
    assert {(o["payment_order_status"], o["failure_code"]) for o in orders_of("chk_gone")} == {
        ("FAILED", psp.AUTHENTICATION_ABANDONED)}
    # the cancel's own webhook, and a late success (reordered or forged), never resurrect the orders
    assert processor.process(delivered(workflow, pi_id, "payment_intent.canceled")) == "already_final"
    late = json.dumps({"id": "evt_late", "object": "event", "type": "payment_intent.succeeded", "created": 1,
                       "account": None, "data": {"object": {"id": pi_id, "object": "payment_intent",
                                                            "status": "succeeded",
                                                            "metadata": {"charge_key": "chk_gone#USD"}}}})
    assert processor.process(late) == "review"
    assert [o["payment_order_status"] for o in orders_of("chk_gone")] == ["FAILED", "FAILED"]


def test_a_success_that_raced_the_cancel_is_a_success(workflow):
    pi_id = challenged("chk_race")
    # the buyer completes the challenge; its webhook has not been processed when the deadline passes
    workflow.state.resolve_payment_intent(pi_id, "succeeded")
    work = work_of("chk_race")
    answer = psp.client().cancel_abandoned(pi_id, work)  # Stripe refuses: the PaymentIntent succeeded
    assert (answer.outcome, answer.psp_status) == ("succeeded", "succeeded")
    clock.advance(settings().threeds_timeout_s + 1)
    assert redrive("chk_race")["charge_status"] == "SUCCESS"
    assert workflow.state.payment_intent(pi_id).status == "succeeded"


def test_a_cancel_retried_after_the_executor_died_reads_the_cancelled_intent(workflow):
    pi_id = challenged("chk_twice")
    work = work_of("chk_twice")
    first = psp.client().cancel_abandoned(pi_id, work)
    again = psp.client().cancel_abandoned(pi_id, work)  # refused (already canceled): its state decides
    assert first == again and first.failure_code == psp.AUTHENTICATION_ABANDONED
    assert psp.client().retrieve(pi_id, work).failure_code == psp.AUTHENTICATION_ABANDONED


def test_a_wallet_order_records_its_wallet(sandbox):
    from functions.payment.schemas import PaymentRequest
    request = PaymentRequest.model_validate({
        "buyer_info": {"buyer_id": "b"}, "checkout_id": "chk_apple",
        "payment_method": {"type": "card", "token": "pm_card_visa", "wallet": "apple_pay"},
        "payment_orders": [{"seller_account": "seller_a", "amount": "3.00", "currency": "USD",
                            "payment_order_id": f"chk_apple_{n}"} for n in range(2)]})
    service.place_checkout(request)
    assert run_charge(begin("chk_apple", "USD"))["charge_status"] == "SUCCESS"
    assert [(o.payment_order_status, o.wallet) for o in service.get_checkout("chk_apple").payment_orders] == [
        ("SUCCESS", "apple_pay"), ("SUCCESS", "apple_pay")]
