"""A checkout of several currencies paid with one single-use PaymentMethod (what Stripe.js hands the server):
its charges attach it to one Customer of the checkout first, as Stripe requires. And Stripe's units on the wire.

Each charge runs as its workflow runs it (Charge, then CreditWallet and RecordLedger when it succeeded, then
finalize), against moto and the PSP sandbox through the unmodified stripe SDK.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from functions.executor import handler as executor
from functions.ledger import handler as ledger_handler
from functions.payment import finalize
from functions.shared import clock, psp
from functions.shared.errors import PspOutcomeUnknown, PspPermanentError, PspTransientError
from functions.shared.tables import PaymentTables
from functions.wallet import handler as wallet_handler
from tests.integration.support import place, work_of
from tests.integration.test_executor import intents_of
from tests.support.events import FakeContext
from verification.storefront import PaymentMethods

USD_AND_EUR = (("seller_a", "12.34", "USD"), ("seller_b", "5.00", "USD"), ("seller_c", "20.00", "EUR"))
VISA, DECLINED = "4242424242424242", "4000000000000002"


def token(server, number=VISA):
    """A PaymentMethod as Stripe.js makes it (POST /v1/payment_methods): usable once unless attached."""
    return PaymentMethods(server.url).create(number)


def begin(checkout_id, currency):
    tables = PaymentTables.from_settings()
    charge = tables.begin_charge_attempt(f"{checkout_id}#{currency}", 1, clock.iso(), clock.iso())
    tables.mark_orders_executing([o["payment_order_id"] for o in charge["orders"]], clock.iso())
    return work_of(checkout_id, currency)


def run_charge(work):
    """The workflow of one charge: Charge, then the per-order steps of a success, then finalize."""
    state = {**work.model_dump(), "charge": executor.execute(work).as_dict()}
    if state["charge"]["outcome"] == "succeeded":
        wallet_handler.handler(state, FakeContext())
        ledger_handler.handler(state, FakeContext())
    return finalize.handler(state, FakeContext())


def run_at_once(works):
    with ThreadPoolExecutor(len(works)) as pool:
        return list(pool.map(run_charge, works))


def customers_of(server, checkout_id):
    return [c for c in server.state.customers.values() if c.metadata.get("checkout_id") == checkout_id]


def test_two_currencies_with_a_single_use_token_both_succeed_through_one_customer(sandbox):
    # Given a USD + EUR checkout paid with a token from POST /v1/payment_methods
    pm = token(sandbox)
    place("chk_mc", orders=USD_AND_EUR, card=pm)
    # and the Customer's creation slowed down, so the two charges' requests overlap (409: key in flight)
    sandbox.faults.push("latency", match={"path": "/v1/customers"}, delay_ms=400)
    # When both charges run at the same moment, as their two executions do
    results = run_at_once([begin("chk_mc", "USD"), begin("chk_mc", "EUR")])
    # Then both succeeded, through one Customer holding the PaymentMethod
    assert [r["charge_status"] for r in results] == ["SUCCESS", "SUCCESS"]
    [customer] = customers_of(sandbox, "chk_mc")
    assert sandbox.state.payment_methods[pm].customer == customer.id
    intents = intents_of(sandbox, "chk_mc")
    assert sorted((c["amount"], c["currency"], c["status"]) for c in intents) == [
        (1734, "usd", "succeeded"), (2000, "eur", "succeeded")]
    assert {sandbox.state.payment_intent(c["payment_intent"]).customer for c in intents} == {customer.id}
    tables = PaymentTables.from_settings()
    for currency in ("USD", "EUR"):
        assert tables.get_charge(f"chk_mc#{currency}")["psp_customer"] == customer.id
    assert {tables.get_order(f"chk_mc_{n}")["payment_order_status"] for n in range(3)} == {"SUCCESS"}
    assert tables.get_checkout("chk_mc")["is_payment_done"] is True


def test_a_declined_card_fails_every_charge_of_the_checkout_with_the_decline_code(sandbox):
    place("chk_md", orders=USD_AND_EUR, card=token(sandbox, DECLINED))
    results = run_at_once([begin("chk_md", "USD"), begin("chk_md", "EUR")])
    assert [r["charge_status"] for r in results] == ["FAILED", "FAILED"]
    tables = PaymentTables.from_settings()
    for n in range(3):
        order = tables.get_order(f"chk_md_{n}")
        assert (order["payment_order_status"], order["failure_code"]) == ("FAILED", "generic_decline")
    assert [c["status"] for c in intents_of(sandbox, "chk_md")] == ["failed", "failed"]


def test_a_single_currency_checkout_makes_no_customer(sandbox):
    pm = token(sandbox)
    place("chk_one", card=pm)
    assert run_charge(begin("chk_one", "USD"))["charge_status"] == "SUCCESS"
    assert sandbox.state.customers == {} and sandbox.state.payment_methods[pm].customer is None
    [charge] = intents_of(sandbox, "chk_one")
    assert sandbox.state.payment_intent(charge["payment_intent"]).customer is None


def test_magic_test_tokens_need_no_customer_for_several_currencies(sandbox):
    place("chk_magic", orders=USD_AND_EUR, card="pm_card_visa")
    assert [r["charge_status"] for r in run_at_once([begin("chk_magic", "USD"), begin("chk_magic", "EUR")])] == [
        "SUCCESS", "SUCCESS"]
    assert sandbox.state.customers == {}


def test_a_lambda_killed_between_customer_and_attach_resumes_with_the_same_customer(sandbox):
    place("chk_ka", orders=USD_AND_EUR, card=token(sandbox))
    work = begin("chk_ka", "USD")
    sandbox.faults.push("connection_reset", match={"path": "/v1/payment_methods/", "method": "POST"})
    with pytest.raises(PspTransientError):  # the Customer exists; the attach never arrived
        executor.execute(work)
    [customer] = customers_of(sandbox, "chk_ka")
    assert "psp_customer" not in PaymentTables.from_settings().get_charge("chk_ka#USD")  # recorded once attached
    assert intents_of(sandbox, "chk_ka") == []
    assert run_charge(work)["charge_status"] == "SUCCESS"  # the key replays the same Customer, then attaches
    assert PaymentTables.from_settings().get_charge("chk_ka#USD")["psp_customer"] == customer.id
    assert run_charge(begin("chk_ka", "EUR"))["charge_status"] == "SUCCESS"
    assert customers_of(sandbox, "chk_ka") == [customer]


def test_a_lambda_killed_between_attach_and_the_payment_intent_charges_once(sandbox):
    place("chk_kp", orders=USD_AND_EUR, card=token(sandbox))
    work = begin("chk_kp", "EUR")
    sandbox.faults.push("connection_reset", match={"idempotency_key": "charge:chk_kp:EUR"})
    with pytest.raises(PspTransientError):
        executor.execute(work)
    assert run_charge(work)["charge_status"] == "SUCCESS"
    assert run_charge(begin("chk_kp", "USD"))["charge_status"] == "SUCCESS"
    assert len(customers_of(sandbox, "chk_kp")) == 1 and len(intents_of(sandbox, "chk_kp")) == 2


def test_past_the_keys_lifetime_the_attached_customer_is_looked_up_not_made_again(sandbox):
    # Given the USD charge attached the token to the checkout's Customer, and the EUR one comes a day later
    place("chk_late", orders=USD_AND_EUR, card=token(sandbox))
    assert run_charge(begin("chk_late", "USD"))["charge_status"] == "SUCCESS"
    eur = begin("chk_late", "EUR")
    sandbox.advance_clock(25 * 3600)  # Stripe pruned customer:, attach: and charge: keys
    clock.advance(timedelta(hours=25).total_seconds())
    # Then the EUR charge finds the Customer through the PaymentMethod and pays with it
    assert run_charge(eur)["charge_status"] == "SUCCESS"
    assert len(customers_of(sandbox, "chk_late")) == 1


def test_an_attach_to_the_same_customer_again_counts_as_done(sandbox):
    place("chk_again", orders=USD_AND_EUR, card=token(sandbox))
    work = begin("chk_again", "USD")
    client = psp.client()
    customer = client.create_customer(work)
    assert client.attach(work, customer) is None
    sandbox.advance_clock(25 * 3600)  # the attach key is gone: a new request, answered "already attached"
    assert client.attach(work, customer) is None
    other = client.create_customer(work.model_copy(update={"checkout_id": "chk_other"}))
    sandbox.advance_clock(25 * 3600)
    with pytest.raises(PspPermanentError, match="already been attached"):  # to another Customer: not ours
        client.attach(work, other)


# --- Stripe's units -----------------------------------------------------------------------------------------


def test_isk_is_sent_in_stripes_two_decimal_units_and_succeeds(sandbox):
    place("chk_isk", orders=(("seller_a", "100", "ISK"),))
    result = run_charge(begin("chk_isk", "ISK"))
    assert result["charge_status"] == "SUCCESS"
    [charge] = intents_of(sandbox, "chk_isk")
    assert (charge["amount"], charge["currency"]) == (10000, "isk")  # 100 ISK; the sandbox refuses 100


def test_an_amount_stripe_cannot_charge_fails_with_its_code_and_calls_nothing(sandbox):
    # Given a charge the API would have refused (422), stored before the rule or changed in flight
    place("chk_small")
    work = begin("chk_small", "USD").model_copy(update={"amount_minor": 49})
    result = executor.execute(work)
    assert (result.outcome, result.failure_code) == ("failed", "amount_below_psp_minimum")
    assert intents_of(sandbox, "chk_small") == []


def test_a_payment_intent_for_another_amount_than_the_charge_is_never_reported_as_its_outcome(sandbox):
    place("chk_amt")
    work = begin("chk_amt", "USD")
    assert executor.execute(work).outcome == "succeeded"
    with pytest.raises(PspOutcomeUnknown, match="17.35 USD"):
        executor.execute(work.model_copy(update={"amount_minor": 1735}))


def test_a_retry_of_a_charge_whose_payment_method_is_attached_asks_the_psp_nothing_about_it(sandbox):
    place("chk_rt", orders=USD_AND_EUR, card=token(sandbox))
    work = begin("chk_rt", "USD")
    sandbox.faults.push("connection_reset", match={"idempotency_key": "charge:chk_rt:USD"})
    with pytest.raises(PspTransientError):
        executor.execute(work)
    sandbox.faults.push("http_500", match={"path": "/v1/customers"})
    sandbox.faults.push("http_500", match={"path": "/v1/payment_methods/"})
    assert executor.execute(work).outcome == "succeeded"  # neither fault was reached
    assert sandbox.faults.stats()["injected"].get("http_500", 0) == 0


def test_the_api_tells_each_charge_every_currency_of_its_checkout(aws_env):
    place("chk_cur", orders=USD_AND_EUR)
    place("chk_usd")
    assert work_of("chk_cur", "EUR").checkout_currencies == ("USD", "EUR")
    assert work_of("chk_cur", "USD").shares_payment_method
    assert work_of("chk_usd").checkout_currencies == ("USD",) and not work_of("chk_usd").shares_payment_method
