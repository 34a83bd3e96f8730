"""SEPA and ACH Direct Debit at the sandbox (issue 17 point 3), through the official SDK: PaymentMethods from
Stripe's test IBANs and bank accounts, a mandate required, `processing` for days of the sandbox clock, then
succeeded or failed with the test account's code, and the webhooks Stripe would send."""

import pytest
import stripe

from psp_sandbox import state as sandbox_state
from psp_sandbox.catalogue import iban_valid, routing_number_valid

MANDATE = {"customer_acceptance": {"type": "online",
                                   "online": {"ip_address": "203.0.113.7", "user_agent": "Mozilla/5.0"}}}


def sepa(client, iban="AT611904300234573201"):
    return client.v1.payment_methods.create(params={
        "type": "sepa_debit", "sepa_debit": {"iban": iban},
        "billing_details": {"name": "Jenny Rosen", "email": "jenny@example.com"}})


def ach(client, account="000123456789"):
    return client.v1.payment_methods.create(params={
        "type": "us_bank_account", "billing_details": {"name": "Jenny Rosen"},
        "us_bank_account": {"routing_number": "110000000", "account_number": account,
                            "account_holder_type": "individual"}})


def debit(client, pm, currency, **extra):
    params = {"amount": 2500, "currency": currency, "payment_method": pm.id, "confirm": True,
              "payment_method_types": [pm.type], "mandate_data": MANDATE, **extra}
    return client.v1.payment_intents.create(params=params)


def settle(sandbox):
    sandbox.advance_clock(sandbox_state.DEBIT_PROCESSING_SECONDS + 1)
    sandbox.state.settle_debits()


def test_a_sepa_debit_is_processing_for_days_then_succeeds(client, sandbox):
    pm = sepa(client)
    assert (pm.type, pm.sepa_debit.last4, pm.sepa_debit.country) == ("sepa_debit", "3201", "AT")
    intent = debit(client, pm, "eur")
    assert intent.status == "processing"
    sandbox.advance_clock(sandbox_state.DEBIT_PROCESSING_SECONDS - 60)
    sandbox.state.settle_debits()
    assert client.v1.payment_intents.retrieve(intent.id).status == "processing"
    settle(sandbox)
    intent = client.v1.payment_intents.retrieve(intent.id)
    assert intent.status == "succeeded"
    charge = sandbox.state.to_json(sandbox.state.charge(intent.latest_charge))
    assert charge["status"] == "succeeded" and charge["payment_method_details"]["type"] == "sepa_debit"
    types = [e.type for e in sandbox.sandbox.webhooks.events.values() if e.obj.get("id") == intent.id]
    assert types[-2:] == ["payment_intent.processing", "payment_intent.succeeded"]


@pytest.mark.parametrize(("account", "code"), [
    ("000111111113", "account_closed"), ("000111111116", "no_account"), ("000222222227", "insufficient_funds")])
def test_an_ach_debit_from_a_failing_test_account_fails_once_the_bank_answers(client, sandbox, account, code):
    intent = debit(client, ach(client, account), "usd")
    assert intent.status == "processing"
    settle(sandbox)
    intent = client.v1.payment_intents.retrieve(intent.id)
    assert (intent.status, intent.last_payment_error.code) == ("requires_payment_method", code)
    assert sandbox.state.charge(intent.latest_charge).status == "failed"


def test_what_stripe_refuses_for_a_bank_debit(client, sandbox):
    with pytest.raises(stripe.InvalidRequestError) as caught:  # no mandate
        client.v1.payment_intents.create(params={"amount": 2500, "currency": "eur", "payment_method": sepa(client).id,
                                                 "confirm": True, "payment_method_types": ["sepa_debit"]})
    assert caught.value.param == "mandate_data"
    with pytest.raises(stripe.InvalidRequestError, match="currency"):  # SEPA is euros only
        debit(client, sepa(client), "usd")
    with pytest.raises(stripe.InvalidRequestError, match="not allowed"):  # a card-only PaymentIntent
        client.v1.payment_intents.create(params={"amount": 2500, "currency": "usd", "payment_method": ach(client).id,
                                                 "confirm": True, "mandate_data": MANDATE})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        sepa(client, "AT611904300234573202")  # one digit off: the checksum fails
    assert (caught.value.code, caught.value.param) == ("invalid_bank_account_iban", "sepa_debit[iban]")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_methods.create(params={"type": "us_bank_account", "billing_details": {"name": "J"},
                                                 "us_bank_account": {"routing_number": "110000001",
                                                                     "account_number": "000123456789"}})
    assert caught.value.code == "routing_number_invalid"
    with pytest.raises(stripe.InvalidRequestError) as caught:  # the holder's name is required
        client.v1.payment_methods.create(params={"type": "sepa_debit", "sepa_debit": {"iban": "AT611904300234573201"}})
    assert caught.value.param == "billing_details[name]"


def test_the_checksums():
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE89370400440532013001")
    assert routing_number_valid("110000000") and routing_number_valid("021000021")
    assert not routing_number_valid("110000001") and not routing_number_valid("11000000")


def test_a_succeeded_debit_returned_by_the_bank_fails_and_leaves_the_balance(client, sandbox):
    intent = debit(client, ach(client), "usd")
    settle(sandbox)
    returned = sandbox.state.return_debit(intent.id, "insufficient_funds")
    assert (returned.status, returned.last_payment_error["code"]) == ("requires_payment_method", "insufficient_funds")
    charge = sandbox.state.charge(returned.latest_charge)
    assert charge.status == "failed"
    [txn] = [t for t in sandbox.state.balance_transactions.values() if t.type == "payment_failure_refund"]
    assert (txn.amount, txn.source) == (-2500, charge.id)
    types = [e.type for e in sandbox.sandbox.webhooks.events.values() if e.obj.get("id") == intent.id]
    assert types[-1] == "payment_intent.payment_failed"
    with pytest.raises(Exception, match="Only a succeeded bank debit"):  # once
        sandbox.state.return_debit(intent.id, "insufficient_funds")


def test_a_sepa_payment_method_needs_the_holders_email(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_methods.create(params={"type": "sepa_debit", "sepa_debit": {"iban": "AT611904300234573201"},
                                                 "billing_details": {"name": "Jenny Rosen"}})
    assert caught.value.param == "billing_details[email]"
