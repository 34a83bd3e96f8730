"""Pieces of the chaos harness that need no local stack: the protections it switches off (each patch lands on
the code it names, and is counted), the search faults it injects at the SDK, and how it names charges."""

import argparse
from collections import Counter

import pytest
import stripe

from functions.ledger.journal import Transaction
from functions.shared.psp import PspClient
from functions.shared.tables import WalletTable
from verification.chaos import MUTATIONS, SearchFaults, _identity, _outage_window, _outcomes, _without

API_KEY = "sk_test_chaos"


def client(sandbox):
    return stripe.StripeClient(API_KEY, base_addresses={"api": sandbox.url})


def intent(sandbox, checkout_id="chk_1", currency="usd", key=None):
    params = {"amount": 1250, "currency": currency, "payment_method": "pm_card_visa", "confirm": True,
              "payment_method_types": ["card"],
              "metadata": {"checkout_id": checkout_id, "charge_key": f"{checkout_id}#{currency.upper()}"}}
    return client(sandbox).v1.payment_intents.create(params=params, options={"idempotency_key": key} if key else {})


def test_without_the_idempotency_key_the_same_charge_twice_is_two_payment_intents(sandbox):
    hits = Counter()
    assert intent(sandbox, key="charge:chk_1:USD").id == intent(sandbox, key="charge:chk_1:USD").id
    with _without("psp_idempotency_key", hits):
        first, second = intent(sandbox, "chk_2", key="charge:chk_2:USD"), intent(sandbox, "chk_2",
                                                                                  key="charge:chk_2:USD")
    assert first.id != second.id and hits["psp_idempotency_key"] == 2


def test_without_the_look_up_nothing_is_found_and_the_switch_is_counted():
    hits = Counter()
    with _without("charge_lookup", hits):
        assert PspClient(API_KEY).find_payment_intent("chk_1#USD") is None
    assert hits == Counter({"charge_lookup": 1})


def test_without_the_guards_the_wallet_and_ledger_writes_are_the_unguarded_ones():
    hits = Counter()
    guarded = WalletTable.apply_movement
    with _without("wallet_guard", hits):
        assert WalletTable.apply_movement is not guarded
    assert WalletTable.apply_movement is guarded
    with _without("ledger_guard", hits):
        payin = Transaction.__new__(Transaction)
        object.__setattr__(payin, "kind", "payin")
        object.__setattr__(payin, "reference", "po_1")
        assert payin.transaction_id != payin.transaction_id  # a new id per write
    assert hits["ledger_guard"] == 2


def test_every_mutation_names_a_target_that_exists():
    import pkgutil

    for protection, (target, what) in MUTATIONS.items():
        assert pkgutil.resolve_name(target) is not None and what, protection
    with pytest.raises(ValueError, match="unknown protection"), _without("nothing", Counter()):
        pass


def test_search_results_lag_a_minute_behind_creation(sandbox):
    faults = Counter()
    created = intent(sandbox, key="charge:chk_1:USD")
    query = {"query": "metadata['charge_key']:'chk_1#USD'"}
    with SearchFaults(sandbox.clock.timestamp, faults).installed():
        assert client(sandbox).v1.payment_intents.search(params=query).data == []
        sandbox.advance_clock(61)
        assert [i.id for i in client(sandbox).v1.payment_intents.search(params=query).data] == [created.id]
    assert faults == Counter({"search_results_lagging": 1})


def test_the_look_ups_of_an_overnight_charge_fail_until_the_night_has_passed(sandbox):
    faults = Counter()
    search = SearchFaults(sandbox.clock.timestamp, faults, lag_s=0)
    search.unreachable.add("chk_1#USD")
    intent(sandbox, key="charge:chk_1:USD")
    intent(sandbox, "chk_2", key="charge:chk_2:USD")
    with search.installed():
        with pytest.raises(stripe.APIConnectionError):
            client(sandbox).v1.payment_intents.search(params={"query": "metadata['charge_key']:'chk_1#USD'"})
        other = client(sandbox).v1.payment_intents.search(params={"query": "metadata['charge_key']:'chk_2#USD'"})
        assert len(other.data) == 1  # only the overnight charge is unreachable
        search.unreachable.clear()
        assert len(client(sandbox).v1.payment_intents.search(
            params={"query": "metadata['charge_key']:'chk_1#USD'"}).data) == 1
    assert faults == Counter({"overnight_lookups_reset": 1})


def test_kills_are_drawn_per_charge_and_attempt_and_outcomes_reported_per_charge():
    assert _identity({"charge_key": "chk_1#USD", "attempt": 2, "orders": []}) == "chk_1#USD:2"
    orders = [{"checkout_id": "chk_1", "currency": "USD", "payment_order_status": s} for s in ("SUCCESS", "SUCCESS")]
    orders.append({"checkout_id": "chk_1", "currency": "EUR", "payment_order_status": "FAILED"})
    assert _outcomes(["chk_1#USD", "chk_1#EUR", "chk_9#USD"], orders) == {
        "chk_1#USD": "SUCCESS (2 orders)", "chk_1#EUR": "FAILED (1 orders)"}


def test_the_outage_window_is_a_share_of_the_orders_and_a_number_of_seconds():
    assert _outage_window("0.3:40") == (0.3, 40.0)
    for bad in ("0.3", "1:40", "0.3:0", "-0.1:40", "a:b"):
        with pytest.raises(argparse.ArgumentTypeError):
            _outage_window(bad)
