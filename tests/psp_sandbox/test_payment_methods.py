"""PaymentMethods as Stripe.js creates them, through the official SDK: single use unless attached to a Customer,
test card numbers' outcomes, refusals of bad card details, and no card number kept anywhere."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
import stripe

from psp_sandbox.errors import PAYMENT_METHOD_CONSUMED, PAYMENT_METHOD_REUSED
from psp_sandbox.idempotency import KEY_LIFETIME_SECONDS, fingerprint

from .conftest import pay

VISA = "4242424242424242"


def card_pm(client: stripe.StripeClient, number: str = VISA, **card: object) -> stripe.PaymentMethod:
    """`POST /v1/payment_methods` with the card's details, as Stripe.js sends them."""
    details = {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123", **card}
    return client.v1.payment_methods.create(params={"type": "card", "card": details})  # type: ignore[arg-type]


def test_sdk_round_trip_mints_a_pm_that_names_no_card_number(client, sandbox):
    # Given a PaymentMethod created from a card number, as Stripe.js does
    pm = card_pm(client, exp_month=7, exp_year=2030)

    # Then it has Stripe's shape, and only the last four digits
    assert isinstance(pm, stripe.PaymentMethod)
    assert pm.id.startswith("pm_") and (pm.object, pm.type, pm.customer) == ("payment_method", "card", None)
    card = pm.card
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("visa", "4242", 7, 2030)
    assert (card.funding, card.country, card.wallet) == ("credit", "US", None)
    assert VISA not in pm.last_response.body
    assert client.v1.payment_methods.retrieve(pm.id).to_dict() == pm.to_dict()

    # When it pays a PaymentIntent
    pi = pay(client, pm.id, key="charge:co_1:USD")

    # Then the charge names the PaymentMethod and its card
    assert pi.status == "succeeded" and pi.payment_method == pm.id
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert charge.payment_method == pm.id
    assert (charge.payment_method_details.card.last4, charge.payment_method_details.card.exp_month) == ("4242", 7)


@pytest.mark.parametrize(
    ("number", "code", "decline_code"),
    [
        ("4000000000000002", "card_declined", "generic_decline"),
        ("4000000000009995", "card_declined", "insufficient_funds"),
        ("4000000000000069", "expired_card", "expired_card"),
        ("4000000000000127", "incorrect_cvc", "incorrect_cvc"),
    ],
)
def test_declining_card_numbers_decline_as_documented(client, sandbox, number, code, decline_code):
    pm = card_pm(client, number)
    assert pm.card.last4 == number[-4:]

    with pytest.raises(stripe.CardError) as caught:
        pay(client, pm.id, key="po_1")

    assert (caught.value.http_status, caught.value.code, caught.value.error.decline_code) == (402, code, decline_code)
    assert caught.value.error.payment_method["id"] == pm.id
    assert [(r["status"], r["payment_method"]) for r in sandbox.charges()] == [("failed", pm.id)]


def test_the_3ds_card_number_requires_action_without_charging(client, sandbox):
    pi = pay(client, card_pm(client, "4000002500003155").id)
    assert (pi.status, pi.next_action.type, pi.latest_charge) == ("requires_action", "use_stripe_sdk", None)
    assert sandbox.charges() == []


def test_card_token_makes_a_payment_method(client, sandbox):
    pm = client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_mastercard"}})
    assert (pm.card.brand, pm.card.last4) == ("mastercard", "4444")
    assert pay(client, pm.id).status == "succeeded"

    declining = client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_chargeDeclined"}})
    with pytest.raises(stripe.CardError):
        pay(client, declining.id, key="po_2")


@pytest.mark.parametrize(
    ("card", "status", "code", "param"),
    [
        ({"number": "4242424242424241"}, 402, "incorrect_number", "card[number]"),
        ({"number": "4242"}, 402, "incorrect_number", "card[number]"),
        ({"exp_month": 13}, 402, "invalid_expiry_month", "card[exp_month]"),
        ({"exp_year": 2020}, 402, "invalid_expiry_year", "card[exp_year]"),
        ({"cvc": "12a"}, 402, "invalid_cvc", "card[cvc]"),
        ({"number": "4000000000000010"}, 402, "card_declined", None),  # a real (non-test) card in test mode
        ({"number": ""}, 400, "parameter_missing", "card[number]"),
        ({"exp_month": ""}, 400, "parameter_missing", "card[exp_month]"),
        ({"colour": "red"}, 400, "parameter_unknown", "card[colour]"),
    ],
)
def test_bad_card_details_are_refused_and_nothing_is_kept(client, sandbox, card, status, code, param):
    with pytest.raises((stripe.CardError, stripe.InvalidRequestError)) as caught:
        card_pm(client, **{"number": VISA, **card})
    assert (caught.value.http_status, caught.value.code, caught.value.param) == (status, code, param)
    assert sandbox.state.payment_methods == {}


def test_unknown_token_and_type_are_refused(client, sandbox):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_nope"}})
    assert (caught.value.http_status, caught.value.code, caught.value.param) == (400, "resource_missing", "card[token]")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_methods.create(params={"type": "bacs_debit"})
    assert caught.value.param == "type"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_methods.retrieve("pm_missing")
    assert (caught.value.http_status, caught.value.code) == (404, "resource_missing")


def test_no_card_number_is_kept_by_the_state_the_idempotency_store_or_the_faults(client, sandbox):
    # Given PaymentMethods created with and without an idempotency key while random faults are drawn
    sandbox.faults.configure(seed=1, rates={"latency": 0.0001})
    params = {"type": "card", "card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": "123"}}
    pm = client.v1.payment_methods.create(params=params, options={"idempotency_key": "pm_1"})
    card_pm(client)

    # Then neither the number nor the CVC, nor an unkeyed digest of them, is in what the sandbox keeps
    as_sent = {"type": "card", "card": {"number": VISA, "exp_month": "12", "exp_year": "2031", "cvc": "123"}}
    kept = repr(
        (
            sandbox.state.payment_methods,
            sandbox.sandbox.idempotency._records,
            sandbox.faults._seen,
            sandbox.state.snapshot(),
        )
    )
    assert pm.id in kept
    assert VISA not in kept and "'123'" not in kept
    assert fingerprint("POST", "/v1/payment_methods", as_sent) not in kept
    # and a replay with the same key and card is still recognised as the same request
    again = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": "123"}},
        options={"idempotency_key": "pm_1"},
    )
    assert again.id == pm.id and again.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):  # another card under the same key
        client.v1.payment_methods.create(
            params={"type": "card", "card": {"number": "5555555555554444", "exp_month": 12, "exp_year": 2031}},
            options={"idempotency_key": "pm_1"},
        )


# ---- single use --------------------------------------------------------------------------------------------


def test_a_second_payment_intent_with_the_same_token_is_refused_as_stripe_refuses_it(client, sandbox):
    # Given a token from Stripe.js that paid one PaymentIntent (the first seller's order)
    pm = card_pm(client)
    first = pay(client, pm.id, amount=1000, key="po_seller_1")
    assert first.status == "succeeded"

    # When a second PaymentIntent uses it (the second seller's order)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        pay(client, pm.id, amount=1500, key="po_seller_2")

    # Then Stripe's error: 400 invalid_request_error, no code, and nothing was created or charged
    error = caught.value
    assert (error.http_status, error.error.type, error.code) == (400, "invalid_request_error", None)
    assert error.param is None and str(error.error.message) == PAYMENT_METHOD_REUSED
    assert list(sandbox.state.payment_intents) == [first.id]
    assert [r["amount"] for r in sandbox.charges()] == [1000]
    # and the refusal is not stored for its key: the same request with an attached method could still run
    stored = sandbox.sandbox.idempotency.keys()
    assert "po_seller_2" not in [k["key"] for k in stored]


def test_confirming_another_intent_with_a_spent_token_is_refused(client, sandbox):
    pm = card_pm(client)
    pay(client, pm.id, key="po_1")
    other = client.v1.payment_intents.create(params={"amount": 900, "currency": "usd"})

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.confirm(other.id, params={"payment_method": pm.id})

    assert str(caught.value.error.message) == PAYMENT_METHOD_REUSED
    assert client.v1.payment_intents.retrieve(other.id).status == "requires_payment_method"


def test_a_declined_token_is_spent_too(client, sandbox):
    pm = card_pm(client, "4000000000000002")
    with pytest.raises(stripe.CardError):
        pay(client, pm.id, key="po_1")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        pay(client, pm.id, key="po_2")
    assert str(caught.value.error.message) == PAYMENT_METHOD_REUSED
    assert len(sandbox.charges()) == 1


def test_the_idempotent_replay_of_the_first_use_still_replays_the_first_answer(client, sandbox):
    pm = card_pm(client)
    first = pay(client, pm.id, key="charge:co_1:USD")

    again = pay(client, pm.id, key="charge:co_1:USD")

    assert again.id == first.id and again.status == "succeeded"
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(sandbox.charges()) == 1


def test_a_lost_answer_of_the_first_use_is_recovered_by_the_retry_with_its_key(client, sandbox):
    pm = card_pm(client)
    sandbox.faults.push("lost_response", match={"idempotency_key": "charge:co_1:USD"})
    with pytest.raises(stripe.APIConnectionError):
        pay(client, pm.id, key="charge:co_1:USD")

    replay = pay(client, pm.id, key="charge:co_1:USD")

    assert replay.status == "succeeded" and replay.last_response.headers["Idempotent-Replayed"] == "true"
    assert [r["payment_intent"] for r in sandbox.charges()] == [replay.id]


def test_past_the_key_lifetime_the_retry_is_refused_so_the_caller_must_look_up_first(client, sandbox):
    pm = card_pm(client)
    first = pay(client, pm.id, key="charge:co_1:USD")
    sandbox.advance_clock(KEY_LIFETIME_SECONDS + 1)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        pay(client, pm.id, key="charge:co_1:USD")

    assert str(caught.value.error.message) == PAYMENT_METHOD_REUSED
    assert [r["payment_intent"] for r in sandbox.charges()] == [first.id]


def test_concurrent_uses_of_one_token_charge_exactly_once(client, sandbox):
    # Given one token and five PaymentIntents racing to use it (each with its own key)
    pm = card_pm(client)
    outcomes: list[str] = []

    def attempt(n: int) -> None:
        try:
            outcomes.append(pay(client, pm.id, key=f"po_{n}").status)
        except stripe.InvalidRequestError as error:
            outcomes.append("refused" if str(error.error.message) == PAYMENT_METHOD_REUSED else "other")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly one charged
    assert sorted(outcomes) == ["refused"] * 4 + ["succeeded"]
    assert len(sandbox.charges()) == 1


def test_magic_test_payment_methods_stay_reusable(client, sandbox):
    ids = [pay(client, "pm_card_visa", key=f"po_{n}").id for n in range(3)]
    assert len(set(ids)) == 3
    assert [r["status"] for r in sandbox.charges()] == ["succeeded"] * 3


# ---- Customers -------------------------------------------------------------------------------------------------


def test_a_token_attached_to_a_customer_is_reusable_with_that_customer(client, sandbox):
    # Given a Stripe.js token attached to a Customer
    customer = client.v1.customers.create(params={"email": "buyer@example.com", "metadata": {"buyer_id": "b_1"}})
    assert isinstance(customer, stripe.Customer) and customer.id.startswith("cus_")
    pm = client.v1.payment_methods.attach(card_pm(client).id, params={"customer": customer.id})
    assert pm.customer == customer.id

    # When two sellers' orders are charged with it, for that Customer
    first = pay(client, pm.id, amount=1000, key="po_1", customer=customer.id)
    second = pay(client, pm.id, amount=1500, key="po_2", customer=customer.id)

    # Then both succeed, and the charges name the Customer
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert client.v1.charges.retrieve(second.latest_charge).customer == customer.id
    listed = client.v1.payment_methods.list(params={"customer": customer.id})
    assert [p.id for p in listed.data] == [pm.id]


def test_an_attached_token_needs_its_own_customer(client, sandbox):
    mine = client.v1.customers.create(params={"name": "Ann"})
    other = client.v1.customers.create(params={"name": "Bob"})
    pm = client.v1.payment_methods.attach(card_pm(client).id, params={"customer": mine.id})

    with pytest.raises(stripe.InvalidRequestError) as without:
        pay(client, pm.id, key="po_1")
    with pytest.raises(stripe.InvalidRequestError) as wrong:
        pay(client, pm.id, key="po_2", customer=other.id)

    assert (without.value.http_status, without.value.param) == (400, "customer")
    assert (wrong.value.http_status, wrong.value.param) == (400, "payment_method")
    assert sandbox.charges() == []


def test_a_spent_token_cannot_be_attached(client, sandbox):
    customer = client.v1.customers.create()
    pm = card_pm(client)
    pay(client, pm.id, key="po_1")

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_methods.attach(pm.id, params={"customer": customer.id})

    assert caught.value.http_status == 400 and str(caught.value.error.message) == PAYMENT_METHOD_CONSUMED
    assert client.v1.payment_methods.retrieve(pm.id).customer is None


def test_a_detached_token_can_never_be_used_again(client, sandbox):
    customer = client.v1.customers.create()
    pm = client.v1.payment_methods.attach(card_pm(client).id, params={"customer": customer.id})
    assert pay(client, pm.id, key="po_1", customer=customer.id).status == "succeeded"

    detached = client.v1.payment_methods.detach(pm.id)

    assert detached.customer is None
    with pytest.raises(stripe.InvalidRequestError) as caught:
        pay(client, pm.id, key="po_2", customer=customer.id)
    assert str(caught.value.error.message) == PAYMENT_METHOD_REUSED
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_methods.attach(pm.id, params={"customer": customer.id})
    with pytest.raises(stripe.InvalidRequestError):  # detaching twice
        client.v1.payment_methods.detach(pm.id)


def test_attaching_a_magic_test_method_clones_it_and_customer_create_can_attach(client, sandbox):
    customer = client.v1.customers.create()
    clone = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    assert clone.id.startswith("pm_") and clone.id != "pm_card_visa" and clone.customer == customer.id

    pm = card_pm(client)
    buyer = client.v1.customers.create(params={"email": "b@example.com", "payment_method": pm.id})
    assert client.v1.payment_methods.retrieve(pm.id).customer == buyer.id
    assert client.v1.customers.retrieve(buyer.id).email == "b@example.com"


def test_unknown_customers_are_refused(client, sandbox):
    pm = card_pm(client)
    with pytest.raises(stripe.InvalidRequestError) as attach:
        client.v1.payment_methods.attach(pm.id, params={"customer": "cus_missing"})
    with pytest.raises(stripe.InvalidRequestError) as create:
        pay(client, "pm_card_visa", key="po_1", customer="cus_missing")
    for caught in (attach, create):
        error = caught.value
        assert (error.http_status, error.code, error.param) == (400, "resource_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as retrieve:
        client.v1.customers.retrieve("cus_missing")
    assert retrieve.value.http_status == 404
    assert pay(client, pm.id, key="po_2").status == "succeeded"  # the refusals did not spend the token


# ---- Stripe.js's publishable key, transfer groups, faults ------------------------------------------------------------


def _raw_post(sandbox, path: str, form: dict[str, str], auth: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    request = urllib.request.Request(
        f"{sandbox.url}{path}", data=urllib.parse.urlencode(form).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_stripe_js_creates_with_the_publishable_key_which_can_do_nothing_else(client, sandbox):
    form = {
        "type": "card",
        "card[number]": "4242 4242 4242 4242",
        "card[exp_month]": "12",
        "card[exp_year]": "34",
        "card[cvc]": "123",
        "billing_details[name]": "Ann Buyer",
        "key": "pk_test_storefront",
        "payment_user_agent": "stripe.js/abc; stripe-js-v3/abc",
    }
    status, body = _raw_post(sandbox, "/v1/payment_methods", form)
    assert status == 200 and body["id"].startswith("pm_")
    assert (body["card"]["exp_year"], body["billing_details"]["name"]) == (2034, "Ann Buyer")
    assert pay(client, body["id"]).status == "succeeded"  # the server side charges it with the secret key

    status, body = _raw_post(sandbox, "/v1/payment_intents", {"amount": "1000", "currency": "usd"}, "pk_test_x")
    assert status == 401 and "publishable API key" in body["error"]["message"]


def test_payment_intents_and_charges_carry_the_transfer_group(client, sandbox):
    pi = pay(client, card_pm(client).id, amount=4200, key="charge:co_9:USD", transfer_group="co_9")

    assert (pi.transfer_group, pi.latest_charge.startswith("ch_")) == ("co_9", True)
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.payment_intent, charge.transfer_group) == (pi.id, "co_9")
    assert (charge.amount, charge.currency, charge.status) == (4200, "usd", "succeeded")
    assert [r["transfer_group"] for r in sandbox.charges()] == ["co_9"]
    pay(client, "pm_card_visa", key="charge:co_8:USD", transfer_group="co_8")
    listed = client.v1.charges.list(params={"transfer_group": "co_9"})
    assert [c.id for c in listed.data] == [charge.id]


def test_faults_apply_to_payment_method_creation(client, sandbox):
    sandbox.faults.push("lost_response", match={"path": "/v1/payment_methods"})
    options = {"idempotency_key": "pm_create_1"}
    params = {"type": "card", "card": {"token": "tok_visa"}}
    with pytest.raises(stripe.APIConnectionError):
        client.v1.payment_methods.create(params=params, options=options)
    created = list(sandbox.state.payment_methods)

    retried = client.v1.payment_methods.create(params=params, options=options)

    assert [retried.id] == created and retried.last_response.headers["Idempotent-Replayed"] == "true"
    sandbox.faults.push("http_503", match={"path": "/v1/payment_methods/"})
    with pytest.raises(stripe.APIError):
        client.v1.payment_methods.retrieve(retried.id)
