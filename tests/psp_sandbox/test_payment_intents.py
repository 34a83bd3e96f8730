"""PaymentIntents and Charges through the official SDK: each test card's documented outcome, lookups, errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import stripe

from psp_sandbox.errors import StripeApiError

from .conftest import pay

SUCCEEDING = ["pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_visa_debit", "pm_card_us"]
DECLINES = [
    ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
    ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
    ("pm_card_chargeDeclinedLostCard", "card_declined", "lost_card"),
    ("pm_card_chargeDeclinedStolenCard", "card_declined", "stolen_card"),
    ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
    ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc"),
    ("pm_card_chargeDeclinedProcessingError", "processing_error", "processing_error"),
]


@pytest.mark.parametrize("pm", SUCCEEDING)
def test_succeeding_cards_charge_once(client, sandbox, pm):
    # Given a confirmed PaymentIntent with a succeeding test card
    pi = pay(client, pm, amount=1234, key="po_ok")

    # Then it succeeded with one succeeded charge carrying the order's metadata
    assert isinstance(pi, stripe.PaymentIntent)
    assert (pi.status, pi.amount, pi.amount_received, pi.currency) == ("succeeded", 1234, 1234, "usd")
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert isinstance(charge, stripe.Charge)
    assert (charge.status, charge.paid, charge.amount, charge.payment_intent) == ("succeeded", True, 1234, pi.id)
    assert charge.metadata["payment_order_id"] == "po_ok"
    records = sandbox.charges()
    assert [(r["payment_intent"], r["status"], r["idempotency_key"]) for r in records] == [
        (pi.id, "succeeded", "po_ok")
    ]


@pytest.mark.parametrize(("pm", "code", "decline_code"), DECLINES)
def test_declining_cards_raise_card_error_and_leave_requires_payment_method(client, sandbox, pm, code, decline_code):
    with pytest.raises(stripe.CardError) as caught:
        pay(client, pm, key="po_declined")

    error = caught.value
    assert error.http_status == 402
    assert error.code == code
    assert error.error.type == "card_error"
    assert error.error.decline_code == decline_code
    pi = client.v1.payment_intents.retrieve(error.error.payment_intent["id"])
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error.code == code
    assert pi.last_payment_error.decline_code == decline_code
    # a failed charge is recorded, and nothing was collected
    failed = client.v1.charges.retrieve(pi.latest_charge)
    assert (failed.status, failed.paid, failed.failure_code) == ("failed", False, code)
    assert [r["status"] for r in sandbox.charges()] == ["failed"]
    assert client.v1.balance_transactions.list().data == []


@pytest.mark.parametrize("pm", ["pm_card_authenticationRequired", "pm_card_threeDSecure2Required"])
def test_authentication_cards_require_action_without_charging(client, sandbox, pm):
    pi = pay(client, pm)

    assert pi.status == "requires_action"
    assert pi.next_action.type == "use_stripe_sdk"
    assert pi.latest_charge is None
    assert sandbox.charges() == []


def test_processing_card_stays_processing_until_resolved(client, sandbox):
    pi = pay(client, "pm_card_processing")
    assert pi.status == "processing"
    assert client.v1.charges.retrieve(pi.latest_charge).status == "pending"

    request = urllib.request.Request(
        f"{sandbox.url}/_sandbox/payment_intents/{pi.id}/resolve",
        data=json.dumps({"outcome": "succeeded"}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request) as answer:
        assert json.load(answer)["status"] == "succeeded"
    assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"
    assert client.v1.charges.retrieve(pi.latest_charge).status == "succeeded"


def test_processing_can_also_fail(client, sandbox):
    pi = pay(client, "pm_card_processing")
    sandbox.state.resolve_payment_intent(pi.id, "failed")
    pi = client.v1.payment_intents.retrieve(pi.id)
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error.decline_code == "generic_decline"


def test_unknown_payment_method_is_resource_missing(client, sandbox):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        pay(client, "pm_card_nope")
    assert caught.value.http_status == 400
    assert caught.value.code == "resource_missing"
    assert caught.value.param == "payment_method"
    assert sandbox.state.payment_intents == {}


def test_create_then_confirm_then_cancel_rules(client):
    pi = client.v1.payment_intents.create(
        params={"amount": 5000, "currency": "eur", "automatic_payment_methods": {"enabled": True}}
    )
    assert pi.status == "requires_payment_method"
    assert pi.automatic_payment_methods.enabled is True

    declined = None
    with pytest.raises(stripe.CardError):
        client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_chargeDeclined"})
    declined = client.v1.payment_intents.retrieve(pi.id)
    assert declined.status == "requires_payment_method"

    confirmed = client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert confirmed.status == "succeeded"
    assert confirmed.last_payment_error is None

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.cancel(pi.id)
    assert caught.value.code == "payment_intent_unexpected_state"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert caught.value.code == "payment_intent_unexpected_state"


def test_cancel_an_unconfirmed_intent(client):
    pi = client.v1.payment_intents.create(params={"amount": 5000, "currency": "usd"})
    canceled = client.v1.payment_intents.cancel(pi.id, params={"cancellation_reason": "abandoned"})
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")
    assert canceled.canceled_at is not None


def test_list_pagination_newest_first(client):
    ids = [pay(client, amount=1000 + i, key=f"po_{i}").id for i in range(5)]

    first = client.v1.payment_intents.list(params={"limit": 2})
    assert [p.id for p in first.data] == ids[::-1][:2]
    assert first.has_more is True
    second = client.v1.payment_intents.list(params={"limit": 2, "starting_after": first.data[-1].id})
    assert [p.id for p in second.data] == ids[::-1][2:4]
    everything = [p.id for p in client.v1.payment_intents.list(params={"limit": 2}).auto_paging_iter()]
    assert everything == ids[::-1]
    charges = client.v1.charges.list(params={"payment_intent": ids[0]})
    assert [c.payment_intent for c in charges.data] == [ids[0]]


def test_search_by_payment_order_id(client):
    pay(client, key="po_1")
    wanted = pay(client, key="po_2")

    found = client.v1.payment_intents.search(params={"query": "metadata['payment_order_id']:'po_2'"})
    assert isinstance(found, stripe.SearchResultObject)
    assert [p.id for p in found.data] == [wanted.id]
    both = client.v1.payment_intents.search(
        params={"query": "metadata['checkout_id']:'co_test' AND status:'succeeded'"}
    )
    assert len(both.data) == 2
    assert client.v1.payment_intents.search(params={"query": "metadata['payment_order_id']:'po_9'"}).data == []


def test_expand_latest_charge(client):
    pi = pay(client)
    expanded = client.v1.payment_intents.retrieve(pi.id, params={"expand": ["latest_charge"]})
    assert expanded.latest_charge.object == "charge"
    assert expanded.latest_charge.id == pi.latest_charge


def test_missing_object_is_404(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.retrieve("pi_missing")
    assert (caught.value.http_status, caught.value.code) == (404, "resource_missing")


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"amount": 10, "currency": "usd"}, "amount", "amount_too_small"),
        ({"amount": 1000, "currency": "xyz"}, "currency", "invalid_currency"),
        ({"currency": "usd"}, "amount", "parameter_missing"),
        ({"amount": 1000, "currency": "usd", "amonut": 3}, "amonut", "parameter_unknown"),
    ],
)
def test_invalid_parameters(client, params, param, code):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.create(params=params)
    assert (caught.value.http_status, caught.value.param, caught.value.code) == (400, param, code)


def test_authentication(make_client, sandbox):
    with pytest.raises(stripe.AuthenticationError) as caught:
        make_client("sk_live_real_key_never").v1.payment_intents.list()
    assert caught.value.http_status == 401

    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(f"{sandbox.url}/v1/payment_intents")
    assert raw.value.code == 401
    assert raw.value.headers["Request-Id"].startswith("req_")
    assert json.load(raw.value)["error"]["type"] == "invalid_request_error"


# --- 3-D Secure (issue 17): the challenge completed, failed or abandoned, as Stripe reports each -------------


CHALLENGED = ["payment_intent.created", "payment_intent.requires_action"]


def intent_events(sandbox, pi_id):
    return [e.type for e in sorted(sandbox.sandbox.webhooks.events.values(), key=lambda e: e.id)
            if e.obj.get("id") == pi_id]


def test_a_3ds_number_from_stripe_js_requires_action_with_a_client_secret(client, sandbox):
    from verification.storefront import PaymentMethods
    pm = PaymentMethods(sandbox.url).create("4000002760003184")  # Stripe's 3-D Secure 2 test card
    pi = pay(client, pm)
    assert pi.status == "requires_action" and pi.next_action.type == "use_stripe_sdk"
    assert pi.client_secret.startswith(pi.id + "_secret_")
    assert intent_events(sandbox, pi.id) == CHALLENGED


def test_a_completed_challenge_charges_and_sends_succeeded(client, sandbox):
    pi = pay(client, "pm_card_threeDSecure2Required")
    sandbox.state.resolve_payment_intent(pi.id, "succeeded")  # POST /_sandbox/payment_intents/{id}/resolve
    pi = client.v1.payment_intents.retrieve(pi.id)
    assert (pi.status, pi.next_action) == ("succeeded", None)
    assert client.v1.charges.retrieve(pi.latest_charge).status == "succeeded"
    assert intent_events(sandbox, pi.id) == [*CHALLENGED, "payment_intent.succeeded"]


def test_a_failed_challenge_is_an_authentication_failure_and_sends_payment_failed(client, sandbox):
    pi = pay(client, "pm_card_authenticationRequiredOnSetup")
    sandbox.state.resolve_payment_intent(pi.id, "failed")
    pi = client.v1.payment_intents.retrieve(pi.id)
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error.code == "payment_intent_authentication_failure"
    assert pi.latest_charge is None and sandbox.charges() == []
    assert intent_events(sandbox, pi.id) == [*CHALLENGED, "payment_intent.payment_failed"]


def test_an_intent_awaiting_its_challenge_can_be_cancelled_once_and_a_succeeded_one_cannot(client, sandbox):
    pi = pay(client, "pm_card_threeDSecure2Required")
    options = {"idempotency_key": "cancel:chk#USD"}
    canceled = client.v1.payment_intents.cancel(pi.id, params={"cancellation_reason": "abandoned"}, options=options)
    again = client.v1.payment_intents.cancel(pi.id, params={"cancellation_reason": "abandoned"}, options=options)
    assert (canceled.status, canceled.cancellation_reason, again.id) == ("canceled", "abandoned", pi.id)
    assert intent_events(sandbox, pi.id) == [*CHALLENGED, "payment_intent.canceled"]
    with pytest.raises(StripeApiError):  # a challenge completed after the cancel is refused
        sandbox.state.resolve_payment_intent(pi.id, "succeeded")

    done = pay(client, "pm_card_threeDSecure2Required")
    sandbox.state.resolve_payment_intent(done.id, "succeeded")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.cancel(done.id, params={"cancellation_reason": "abandoned"})
    assert caught.value.code == "payment_intent_unexpected_state"
