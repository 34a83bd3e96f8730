"""Failover (issue 18 point 4), on moto and both sandboxes: while the rules' PSP is down (its circuit breaker open),
the route endpoint names the failover PSP and a checkout paid with that PSP's card is placed and charged there; a
checkout paid with the down PSP's token stays there, and its charge is parked (nothing sent, no attempt spent)
until the breaker lets a call through; no charge ever moves between PSPs."""

import json
from datetime import timedelta

import pytest

from functions.executor import handler as executor
from functions.executor import sweeper
from functions.payment import api
from functions.shared import breaker as breakers
from functions.shared import clock, psp
from functions.shared.config import reload_settings
from functions.shared.models import ChargeWork
from functions.shared.tables import PaymentTables
from tests.integration.test_adyen_checkout import adyen_card, adyen_payments
from tests.integration.test_adyen_checkout import post as post_checkout
from tests.integration.test_executor_adyen import adyen  # noqa: F401 - the fixture
from tests.integration.test_executor_checkout import begin, run_charge
from tests.integration.test_tenancy import call
from tests.support.events import FakeContext, http_event
from verification.storefront import RETURN_URL

FAILOVER = {"failover": {"stripe": "adyen"}}  # no rules: Stripe charges everything, Adyen takes cards over
ORDER = (("seller_a", "20.00", "EUR"),)


@pytest.fixture
def failover(adyen, monkeypatch):  # noqa: F811 - the fixture imported above
    monkeypatch.setenv("PSP_ROUTING", json.dumps(FAILOVER))
    reload_settings()
    psp.reset_client()
    breakers.reset()
    yield adyen
    breakers.reset()


def stripe_down(minutes=10):
    breakers.breaker().force("stripe", breakers.OPEN, minutes=minutes, by="test")


def stripe_back():
    breakers.breaker().force("stripe", breakers.CLOSED, by="test")


def route(orders=ORDER, method="card"):
    body = {"payment_method_type": method, "buyer_country": "NL",
            "payment_orders": [{"seller_account": s, "amount": a, "currency": c} for s, a, c in orders]}
    answer = api.handler(http_event("POST", "/v1/payment_routes", body), FakeContext())
    return answer["statusCode"], json.loads(answer["body"])


def stripe_card_checkout(checkout_id, orders=ORDER):
    return post_checkout(checkout_id, orders, token="pm_card_visa")


def stripe_payment_intents(server, checkout_id):
    return [pi for pi in server.state.payment_intents.values() if pi.metadata.get("checkout_id") == checkout_id]


def test_the_route_is_the_rules_psp_while_it_is_up(failover):
    status, answer = route()
    assert status == 200, answer
    assert answer == {"routes": [{"currency": "EUR", "psp": "stripe", "rule": "", "failover_from": None}],
                      "psp": "stripe"}


def test_while_stripe_is_down_new_card_charges_go_to_adyen_and_are_charged_there_only(failover, sandbox):
    stripe_down()
    status, answer = route()
    assert answer["psp"] == "adyen" and answer["routes"][0] == {
        "currency": "EUR", "psp": "adyen", "rule": "default/failover", "failover_from": "stripe"}
    # the storefront tokenizes the card with Adyen, as the route said
    status, placed = post_checkout("chk_fo", ORDER)
    assert status == 202, placed
    charge = PaymentTables.from_settings().get_charge("chk_fo#EUR")
    assert (charge["psp"], charge["psp_route"]) == ("adyen", "default/failover")
    assert run_charge(begin("chk_fo", "EUR"))["charge_status"] == "SUCCESS"
    assert len(adyen_payments(failover, "chk_fo")) == 1
    assert stripe_payment_intents(sandbox, "chk_fo") == []


def test_a_method_adyen_does_not_take_here_stays_with_stripe(failover):
    stripe_down()
    _, answer = route(method="paypal")
    assert answer["psp"] == "stripe" and answer["routes"][0]["failover_from"] is None


def test_a_multi_currency_checkout_is_not_failed_over_to_a_card_that_pays_one_payment(failover):
    stripe_down()
    _, answer = route(orders=(("seller_a", "20.00", "EUR"), ("seller_b", "5.00", "USD")))
    assert {r["psp"] for r in answer["routes"]} == {"stripe"} and answer["psp"] == "stripe"


def test_an_adyen_card_is_refused_when_stripe_is_up_and_was_not_down_lately(failover):
    status, answer = post_checkout("chk_no_fo", ORDER)
    assert status == 422 and answer["error"]["code"] == "payment_method_not_for_routed_psp", answer


def test_a_route_given_during_the_outage_is_honoured_for_a_while_after_it(failover, monkeypatch):
    stripe_down()
    stripe_back()  # closed just now: the buyer who tokenized with Adyen a moment ago still pays
    assert post_checkout("chk_late", ORDER)[0] == 202
    assert PaymentTables.from_settings().get_charge("chk_late#EUR")["psp"] == "adyen"
    clock.advance(reload_settings().failover_grace_s + 1)
    breakers.reset()  # another instance, past its cache
    assert post_checkout("chk_too_late", ORDER)[0] == 422
    # the storefront's retry of the checkout placed during the failover answers as first answered, not 422
    status, replayed = post_checkout("chk_late", ORDER)
    assert status == 202 and replayed["checkout_id"] == "chk_late", replayed
    status, conflict = post_checkout("chk_late", (("seller_a", "21.00", "EUR"),))
    assert status == 409, conflict


@pytest.mark.parametrize("then", ["closed", "unreadable"])
def test_placing_routes_with_the_look_validation_took_so_an_adyen_card_is_never_placed_at_stripe(
        failover, monkeypatch, then):
    # Chaos seed 4: validation saw Stripe down and took the Adyen card; placing read the breaker again, found it
    # closed (or could not read it: "not down"), and placed the charge at Stripe, which refused the Adyen card.
    reads = []
    real = breakers.psp_down

    def flipping(psp_name, **kwargs):
        reads.append(psp_name)
        if len(reads) == 1:
            return True  # the first look: Stripe down
        if then == "unreadable":
            return False  # psp_down's answer when the breaker cannot be read
        return real(psp_name, **kwargs)  # the breaker as it is: closed

    monkeypatch.setattr(breakers, "psp_down", flipping)
    status, placed = post_checkout("chk_one_look", ORDER)
    assert status == 202, placed
    charge = PaymentTables.from_settings().get_charge("chk_one_look#EUR")
    assert (charge["psp"], charge["psp_route"]) == ("adyen", "default/failover")
    assert reads.count("stripe") == 1  # one look per request, kept for placing


def test_a_route_that_changed_after_validation_writes_nothing(failover, monkeypatch):
    # whatever validation saw, placing never writes a charge at a PSP that cannot charge the method
    from functions.payment import schemas

    stripe_down()
    monkeypatch.setattr(schemas.PaymentRequest, "psp_down", lambda self, psp_name: False)
    status, answer = post_checkout("chk_changed", ORDER)
    assert status == 422 and answer["error"]["code"] == "payment_method_not_for_routed_psp", answer
    tables = PaymentTables.from_settings()
    assert tables.get_charge("chk_changed#EUR") is None and tables.get_checkout("chk_changed") is None


def test_a_keyed_clients_replay_after_the_grace_finds_its_own_checkout_and_never_anothers(failover):
    body = {"buyer_info": {"buyer_id": "b", "country": "NL"}, "checkout_id": "chk_shop",
            "payment_method": {"type": "card", "adyen": adyen_card(), "return_url": RETURN_URL},
            "payment_orders": [{"seller_account": "seller_a", "amount": "20.00", "currency": "EUR",
                                "payment_order_id": "chk_shop_0"}]}
    stripe_down()
    assert call("shop_a", "POST", "/v1/payments", body)[0] == 202
    stripe_back()
    clock.advance(reload_settings().failover_grace_s + 1)
    breakers.reset()
    status, replayed, headers = call("shop_a", "POST", "/v1/payments", body)
    assert status == 202 and headers.get("Idempotent-Replayed") == "true", replayed
    # another client's checkout of the same id was never placed: its Adyen card is refused as routed to Stripe
    status, refused, _ = call("shop_b", "POST", "/v1/payments", body)
    assert status == 422 and refused["error"]["code"] == "payment_method_not_for_routed_psp", refused


@pytest.mark.parametrize(("amount", "currency"), [("0.40", "EUR"), ("1.234", "KWD")])
def test_a_replay_after_the_grace_of_an_amount_only_adyen_takes_is_answered_as_placed(failover, amount, currency):
    # Given a checkout placed at Adyen during a Stripe outage (Stripe charges everything otherwise), for an amount
    # Stripe would refuse (under its EUR minimum; KWD's third decimal)
    body = {"buyer_info": {"buyer_id": "b", "country": "NL"}, "checkout_id": f"chk_small_{currency}",
            "payment_method": {"type": "card", "adyen": adyen_card(), "return_url": RETURN_URL},
            "payment_orders": [{"seller_account": "seller_a", "amount": amount, "currency": currency,
                                "payment_order_id": f"chk_small_{currency}_0"}]}
    stripe_down()
    status, placed, _ = call("shop_a", "POST", "/v1/payments", body)
    assert status == 202, placed
    # When Stripe is back, the grace is over, and the storefront retries the same POST
    stripe_back()
    clock.advance(reload_settings().failover_grace_s + 1)
    breakers.reset()
    status, replayed, headers = call("shop_a", "POST", "/v1/payments", body)
    # Then it is answered as first placed, not refused by Stripe's amount rules
    assert status == 202 and headers.get("Idempotent-Replayed") == "true", replayed
    assert replayed == placed


def test_a_checkout_with_the_down_psps_token_stays_there_and_is_parked_without_a_call(failover, sandbox):
    stripe_down(minutes=10)
    status, placed = stripe_card_checkout("chk_wait")
    assert status == 202, placed
    tables = PaymentTables.from_settings()
    assert tables.get_charge("chk_wait#EUR")["psp"] == "stripe"  # never moved: the token is Stripe's
    work = begin("chk_wait", "EUR")
    assert executor.execute(work).outcome == "parked"
    assert executor.execute(work).outcome == "parked"  # the same attempt again (a retried invocation): counted once
    charge = tables.get_charge("chk_wait#EUR")
    assert charge["charge_status"] == "EXECUTING" and int(charge.get("psp_calls", 0)) == 0
    assert int(charge["parked_attempts"]) == 1
    # due when it may ask again: at most a minute or so ahead (an early close releases it soon), jittered
    assert charge["psp_down_since"] and clock.iso(clock.now() + timedelta(seconds=20)) <= charge["due_at"] <= clock.iso(
        clock.now() + timedelta(seconds=executor.PARK_MAX_S + executor.PARK_JITTER_S))
    assert stripe_payment_intents(sandbox, "chk_wait") == []
    # Stripe back: the next attempt sends, succeeds, and the wait is over
    stripe_back()
    assert run_charge(work)["charge_status"] == "SUCCESS"
    assert len(stripe_payment_intents(sandbox, "chk_wait")) == 1
    assert "psp_down_since" not in tables.get_charge("chk_wait#EUR")
    assert adyen_payments(failover, "chk_wait") == []


def test_the_sweeper_counts_no_attempt_against_a_parked_charge_until_the_outage_is_too_long(failover, monkeypatch):
    started = []
    monkeypatch.setattr(sweeper.queues, "start_workflow", started.append)  # the workflow itself: tests above
    stripe_down(minutes=60)
    stripe_card_checkout("chk_long")
    tables = PaymentTables.from_settings()
    work = begin("chk_long", "EUR")
    assert executor.execute(work).outcome == "parked"
    config = reload_settings()
    charge = tables.get_charge("chk_long#EUR")
    tables._update_charge_if("chk_long#EUR", "SET attempts = :n, parked_attempts = :n, psp_calls = :one",
                             "attribute_exists(charge_key)",  # every attempt spent waiting, one call out before
                             {":n": config.max_attempts, ":one": 1})
    due = clock.parse_iso(charge["due_at"])
    clock.advance((due - clock.now()).total_seconds() + 1)
    assert sweeper._drive(tables, "chk_long#EUR", clock.now()) == "redriven"  # a wait, not a failure
    assert [w.charge_key for w in started] == ["chk_long#EUR"]
    clock.advance(config.psp_outage_max_wait_s)
    assert sweeper._drive(tables, "chk_long#EUR", clock.now()) == "dead_lettered"  # a human looks, with an alarm


def test_an_outage_opens_the_breaker_and_the_charges_it_caught_wait_for_stripe_instead_of_failing(failover, sandbox):
    """Stripe refuses every connection: the charges in flight open its breaker by their own failures, then wait
    (parked, not dead-lettered); once Stripe is back, the probe closes it and each is charged exactly once."""
    sandbox.faults.configure(seed=1, rates={"connection_reset": 1.0})
    tables = PaymentTables.from_settings()
    works, outcomes = [], []
    for n in range(6):  # five failures within the window open it
        stripe_card_checkout(f"chk_out{n}")
        works.append(begin(f"chk_out{n}", "EUR"))
    for work in works:
        try:
            outcomes.append(executor.execute(work).outcome)
        except Exception as error:  # noqa: BLE001 - what each attempt ended with is the assertion
            outcomes.append(type(error).__name__)
    assert breakers.breaker().view("stripe").state == breakers.OPEN, (outcomes, sandbox.faults.stats(),
                                                                      breakers.breaker().view("stripe"))
    # four unclear failures retried as before; the fifth opened it and waits; the sixth sent nothing
    assert outcomes == ["PspTransientError"] * 4 + ["parked"] * 2
    # the fifth sent its call: a spent attempt; the sixth sent nothing: a wait, not held against max_attempts
    assert [int(tables.get_charge(w.charge_key).get("parked_attempts", 0)) for w in works[4:]] == [0, 1]
    assert all(tables.get_charge(w.charge_key)["charge_status"] == "EXECUTING" for w in works)
    assert all(stripe_payment_intents(sandbox, f"chk_out{n}") == [] for n in range(6))
    # Stripe back, the wait over: the first attempt is the probe and closes the breaker; each charged once
    sandbox.faults.configure(seed=1, rates={})
    clock.advance(reload_settings().breaker_cooldown_s + 1)
    breakers.reset()
    assert [run_charge(w)["charge_status"] for w in works] == ["SUCCESS"] * 6
    assert breakers.breaker().view("stripe").state == breakers.CLOSED
    assert all(len(stripe_payment_intents(sandbox, f"chk_out{n}")) == 1 for n in range(6))


def test_a_charge_never_sent_fails_psp_unavailable_once_it_has_waited_long_enough(failover, sandbox):
    stripe_down(minutes=60)
    stripe_card_checkout("chk_never")
    work = begin("chk_never", "EUR")
    assert executor.execute(work).outcome == "parked"
    clock.advance(reload_settings().psp_unavailable_fail_after_s)
    result = executor.execute(work)
    assert (result.outcome, result.failure_code) == ("failed", "psp_unavailable")
    assert run_charge(work)["charge_status"] == "FAILED"  # the workflow's finalize: the orders end FAILED
    order = PaymentTables.from_settings().get_order("chk_never_0")
    assert (order["payment_order_status"], order["failure_code"]) == ("FAILED", "psp_unavailable"), order
    assert stripe_payment_intents(sandbox, "chk_never") == []


def test_a_charge_with_a_call_out_before_the_outage_is_never_failed_for_waiting(failover, sandbox):
    stripe_down(minutes=60)
    stripe_card_checkout("chk_sent")
    tables = PaymentTables.from_settings()
    work = begin("chk_sent", "EUR")
    tables.note_psp_call("chk_sent#EUR", work.attempt)  # a call went out (its answer lost) before the breaker opened
    assert executor.execute(work).outcome == "parked"
    clock.advance(reload_settings().psp_unavailable_fail_after_s + 60)
    assert executor.execute(work).outcome == "parked"  # it may have charged: it waits for a look-up



def test_a_charge_failed_unsent_is_never_sent_after_even_when_its_finalize_died(failover, sandbox):
    """The decision is in the charge before the answer: finalize killed after marking the orders FAILED, Stripe
    back, the sweeper's next attempt (and any stale run) sends nothing and answers FAILED again."""
    stripe_down(minutes=60)
    stripe_card_checkout("chk_dead_fin")
    tables = PaymentTables.from_settings()
    work = begin("chk_dead_fin", "EUR")
    assert executor.execute(work).outcome == "parked"
    clock.advance(reload_settings().psp_unavailable_fail_after_s)
    assert executor.execute(work).failure_code == "psp_unavailable"  # ... and finalize never ran
    charge = tables.get_charge("chk_dead_fin#EUR")
    assert charge["unsent_failed_at"] and charge["charge_status"] == "EXECUTING"
    stripe_back()
    assert executor.execute(work).failure_code == "psp_unavailable"  # a stale run of the same attempt
    clock.advance(reload_settings().executing_deadline_s + 1)
    started = tables.begin_charge_attempt("chk_dead_fin#EUR", work.attempt + 1, clock.iso(), clock.iso(),
                                          expected_due_at=tables.get_charge("chk_dead_fin#EUR")["due_at"])
    later = ChargeWork.from_charge_item(started, attempt=work.attempt + 1)
    assert run_charge(later)["charge_status"] == "FAILED"
    assert stripe_payment_intents(sandbox, "chk_dead_fin") == []
    assert tables.get_order("chk_dead_fin_0")["failure_code"] == "psp_unavailable"


def test_the_sweeper_leaves_a_bank_debit_processing_through_a_long_outage_to_its_own_wait(failover, monkeypatch):
    monkeypatch.setattr(sweeper.queues, "start_workflow", lambda work: None)
    stripe_down(minutes=60)
    stripe_card_checkout("chk_debit")
    tables = PaymentTables.from_settings()
    begin("chk_debit", "EUR")
    tables._update_charge_if("chk_debit#EUR", "SET payment_method_type = :t, psp_status = :p, psp_down_since = :d, "
                             "due_at = :d", "attribute_exists(charge_key)",
                             {":t": "sepa_debit", ":p": "processing", ":d": clock.iso()})
    clock.advance(reload_settings().psp_outage_max_wait_s + 1)
    assert sweeper._drive(tables, "chk_debit#EUR", clock.now()) == "redriven"  # the bank has days to answer


def test_a_never_sent_limit_at_or_past_the_outage_limit_is_refused_at_start():
    from pydantic import ValidationError

    from functions.shared.config import Settings
    from tests.unit.test_routing import TABLES

    with pytest.raises(ValidationError, match="PSP_UNAVAILABLE_FAIL_AFTER_S"):
        Settings.model_validate(TABLES | {"psp_unavailable_fail_after_s": 3600, "psp_outage_max_wait_s": 3600})
