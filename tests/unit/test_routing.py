"""PSP routing (functions/shared/routing.py): first matching rule wins, the default otherwise, and a configuration
that cannot be read exactly as written refuses to start."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from functions.shared.config import Settings
from functions.shared.money import Money
from functions.shared.routing import (
    METHODS,
    ROUTABLE_PSPS,
    Charge,
    Route,
    Routing,
    RoutingConfigError,
    parse_routing,
)

BOTH = ("stripe", "psp2")  # what the rules may name in these tests: a second PSP that takes every method
TABLES = {name: "t" for name in ("payment_events_table", "payment_orders_table", "wallet_table", "ledger_table")}


def routing(*rules: dict[str, Any], default: str | None = None) -> Routing:
    config: dict[str, Any] = {"rules": list(rules)} | ({"default": default} if default else {})
    return parse_routing(json.dumps(config), routable=BOTH)


def charge(amount: str = "20.00", currency: str = "EUR", method: str = "card", country: str | None = "NL",
           sellers: tuple[str, ...] = ("acct_1",)) -> Charge:
    return Charge(Money.from_major(amount, currency), method, country, frozenset(sellers))


charges = st.builds(
    Charge,
    amount=st.builds(Money, st.integers(1, 10**9), st.sampled_from(["EUR", "USD", "JPY", "KWD", "GBP"])),
    method=st.sampled_from(METHODS),
    buyer_country=st.one_of(st.none(), st.sampled_from(["NL", "DE", "US", "JP", "GB"])),
    sellers=st.frozensets(st.sampled_from(["acct_1", "acct_2", "acct_3"]), min_size=1),
)


@given(charges)
def test_without_configuration_everything_goes_to_stripe(c: Charge):
    assert parse_routing("").route(c).psp == "stripe"
    assert parse_routing("", default="stripe").route(c).rule == ""
    assert ROUTABLE_PSPS == ("stripe", "adyen")


def test_the_first_matching_rule_wins():
    rules = routing({"name": "nl", "psp": "psp2", "buyer_countries": ["NL"]},
                    {"name": "eur", "psp": "stripe", "currencies": ["EUR"]},
                    {"name": "all", "psp": "psp2"})
    assert rules.route(charge(country="NL")) == rules.route(charge(country="NL", currency="USD", amount="1.00"))
    assert (rules.route(charge(country="NL")).psp, rules.route(charge(country="NL")).rule) == ("psp2", "nl")
    assert (rules.route(charge(country="DE")).psp, rules.route(charge(country="DE")).rule) == ("stripe", "eur")
    assert rules.route(charge(country="DE", currency="USD")).rule == "all"


@pytest.mark.parametrize(("rule", "matching", "other"), [
    ({"currencies": ["EUR", "GBP"]}, charge(currency="GBP"), charge(currency="USD")),
    ({"methods": ["sepa_debit"]}, charge(method="sepa_debit"), charge(method="card")),
    ({"buyer_countries": ["DE"]}, charge(country="DE"), charge(country=None)),
    ({"sellers": ["acct_1", "acct_2"]}, charge(sellers=("acct_1", "acct_2")), charge(sellers=("acct_1", "acct_9"))),
    ({"amount": {"currency": "EUR", "min": "10.00"}}, charge(amount="10.00"), charge(amount="9.99")),
    ({"amount": {"currency": "EUR", "max": "50"}}, charge(amount="50.00"), charge(amount="50.01")),
    ({"amount": {"currency": "EUR", "min": "1.00"}}, charge(amount="5.00"), charge(amount="5.00", currency="USD")),
    ({"amount": {"currency": "JPY", "min": "1000", "max": "2000"}}, charge("1500", "JPY"), charge("2001", "JPY")),
])
def test_each_criterion(rule: dict[str, Any], matching: Charge, other: Charge):
    rules = routing({"name": "r", "psp": "psp2", **rule})
    assert rules.route(matching).psp == "psp2"
    assert rules.route(other).psp == "stripe"


@given(charges)
def test_a_rule_without_criteria_matches_everything_and_rules_after_a_match_change_nothing(c: Charge):
    assert routing({"psp": "psp2"}).route(c).psp == "psp2"
    first = routing({"name": "nl", "psp": "psp2", "buyer_countries": ["NL"]})
    more = routing({"name": "nl", "psp": "psp2", "buyer_countries": ["NL"]}, {"name": "x", "psp": "stripe"})
    if first.route(c).rule:
        assert more.route(c) == first.route(c)


@given(charges)
def test_rules_that_name_the_default_never_move_a_charge(c: Charge):
    rules = routing({"psp": "stripe", "currencies": ["EUR"]}, {"psp": "stripe", "methods": ["card"]})
    assert rules.route(c).psp == "stripe"


@pytest.mark.parametrize("text", [
    "not json",
    "[]",
    '{"rules": [], "other": 1}',
    '{"rules": {}}',
    '{"default": "paypal"}',
    '{"rules": [{"psp": "paypal"}]}',
    '{"rules": [{"currencies": ["EUR"]}]}',  # no psp
    '{"rules": [{"psp": "stripe", "currency": ["EUR"]}]}',  # a misspelt criterion is not "matches everything"
    '{"rules": [{"psp": "stripe", "currencies": []}]}',
    '{"rules": [{"psp": "stripe", "currencies": ["eur"]}]}',
    '{"rules": [{"psp": "stripe", "currencies": ["XXX"]}]}',
    '{"rules": [{"psp": "stripe", "methods": ["check"]}]}',  # checks and money orders never route
    '{"rules": [{"psp": "stripe", "buyer_countries": ["nld"]}]}',
    '{"rules": [{"psp": "stripe", "sellers": "acct_1"}]}',
    '{"rules": [{"psp": "stripe", "amount": {"currency": "EUR"}}]}',
    '{"rules": [{"psp": "stripe", "amount": {"currency": "JPY", "min": "1.5"}}]}',  # finer than the yen
    '{"rules": [{"psp": "stripe", "amount": {"currency": "EUR", "min": 10}}]}',  # a number, not a decimal string
    '{"rules": [{"psp": "stripe", "amount": {"currency": "EUR", "min": "1e3"}}]}',
    '{"rules": [{"psp": "stripe", "amount": {"currency": "EUR", "min": "9", "max": "1"}}]}',
    '{"rules": [{"psp": "stripe", "currencies": ["USD"], "amount": {"currency": "EUR", "min": "1"}}]}',
    '{"rules": [{"name": "a", "psp": "stripe"}, {"name": "a", "psp": "stripe"}]}',
    '{"rules": [{"name": "", "psp": "stripe"}]}',
])
def test_a_configuration_that_cannot_be_read_as_written_is_refused(text: str):
    with pytest.raises(RoutingConfigError):
        parse_routing(text, routable=BOTH)


def test_adyen_is_routable_for_cards_only_and_never_the_default():
    eur_cards = parse_routing('{"rules": [{"name": "eur-cards", "psp": "adyen", "currencies": ["EUR"], '
                              '"methods": ["card"]}]}')
    assert eur_cards.route(charge()).psp == "adyen" and eur_cards.route(charge(currency="USD")).psp == "stripe"
    assert eur_cards.route(charge(method="sepa_debit")).psp == "stripe"
    for text in ('{"rules": [{"psp": "adyen", "currencies": ["EUR"]}]}',  # would take PayPal and SEPA too
                 '{"rules": [{"psp": "adyen", "methods": ["card", "paypal"]}]}', '{"default": "adyen"}'):
        with pytest.raises(RoutingConfigError, match="card"):
            parse_routing(text)
    with pytest.raises(RoutingConfigError, match="cannot be routed"):
        parse_routing('{"rules": [{"psp": "paypal", "methods": ["card"]}]}')


def test_the_psps_a_currency_may_reach_before_its_total_is_known():
    rules = parse_routing(json.dumps({"rules": [
        {"name": "big-eur", "psp": "adyen", "methods": ["card"], "amount": {"currency": "EUR", "min": "100"}},
        {"name": "gbp", "psp": "adyen", "methods": ["card"], "currencies": ["GBP"]},
        {"name": "usd-all", "psp": "stripe", "currencies": ["USD"]},
        {"name": "after", "psp": "adyen", "methods": ["card"], "currencies": ["USD"]}]}))
    assert rules.possible_psps("EUR") == {"adyen", "stripe"}
    assert rules.possible_psps("GBP") == {"adyen", "stripe"}  # the rule asks the method too: a PayPal GBP is Stripe's
    assert rules.possible_psps("USD") == {"stripe"}  # a rule asking only the currency ends the list
    assert rules.possible_psps("JPY") == {"stripe"}
    assert parse_routing("").possible_psps("EUR") == {"stripe"}


def test_a_routing_to_adyen_needs_adyens_settings_to_start():
    eur = '{"rules": [{"name": "eur", "psp": "adyen", "currencies": ["EUR"], "methods": ["card"]}]}'
    with pytest.raises(ValidationError, match="ADYEN_MERCHANT_ACCOUNT"):
        Settings.model_validate(TABLES | {"psp_routing": eur})
    with pytest.raises(ValidationError, match="ADYEN_MERCHANT_ACCOUNT"):
        Settings.model_validate(TABLES | {"psp_routing": eur, "adyen_merchant_account": "M"})
    started = Settings.model_validate(TABLES | {"psp_routing": eur, "adyen_merchant_account": "M",
                                                "adyen_api_key_parameter": "/p/adyen"})
    assert started.routing.rules[0].psp == "adyen"
    with pytest.raises(ValidationError, match="ADYEN_MERCHANT_ACCOUNT"):  # a failover to Adyen places charges there
        Settings.model_validate(TABLES | {"psp_routing": '{"failover": {"stripe": "adyen"}}'})


def test_the_function_does_not_start_with_a_bad_routing(monkeypatch):
    assert Settings.model_validate(TABLES).routing == Routing((), "stripe")
    good = '{"rules": [{"name": "eu", "psp": "stripe", "currencies": ["EUR"]}]}'
    assert Settings.model_validate(TABLES | {"psp_routing": good}).routing.rules[0].name == "eu"
    for text in ('{"rules": [{"psp": "adyen"}]}', "{", '{"rules": [{"psp": "stripe", "methods": ["cash"]}]}'):
        with pytest.raises(ValidationError):
            Settings.model_validate(TABLES | {"psp_routing": text})
    for name, value in TABLES.items():
        monkeypatch.setenv(name.upper(), value)
    monkeypatch.setenv("PSP_ROUTING", '{"rules": [{"psp": "adyen"}]}')
    with pytest.raises(ValidationError):
        Settings.from_env()


# -- failover (issue 18 point 4) ----------------------------------------------------------------------------------


def with_failover(*rules: dict[str, Any], failover: dict[str, str]) -> Routing:
    return parse_routing(json.dumps({"rules": list(rules), "failover": failover}), routable=("stripe", "adyen"))


def down(*psps: str) -> Any:
    return lambda psp: psp in psps


def test_failover_takes_a_new_charge_only_while_the_chosen_psp_is_down() -> None:
    rules = with_failover(failover={"stripe": "adyen"})
    assert rules.route(charge()) == Route("stripe", "")
    assert rules.route(charge(), down=down("stripe")) == Route("adyen", "default/failover", failover_from="stripe")
    assert rules.route(charge(), down=down("adyen")) == Route("stripe", "")


def test_failover_never_moves_a_payment_method_issued_by_the_chosen_psp() -> None:
    """A token of the chosen PSP stays there even while it is down: its charge waits, it is never charged elsewhere."""
    rules = with_failover(failover={"stripe": "adyen"})
    assert rules.route(charge(), owner="stripe", down=down("stripe")) == Route("stripe", "")
    assert rules.route(charge(), owner="adyen", down=down("stripe")).psp == "adyen"
    assert rules.route(charge(), owner="adyen").psp == "stripe"  # up: the rules decide, the token is refused later


def test_failover_only_where_the_other_psp_takes_the_method_and_is_up() -> None:
    rules = with_failover(failover={"stripe": "adyen"})
    assert rules.route(charge(method="paypal"), down=down("stripe")).psp == "stripe"  # Adyen charges cards only here
    assert rules.route(charge(), down=down("stripe", "adyen")).psp == "stripe"


def test_the_failover_psp_is_judged_down_now_without_the_grace() -> None:
    """`down` keeps a recovered PSP "down" for a grace period (honouring routes already given); the PSP a charge
    fails over to is judged by `down_now`: Adyen back a minute ago takes the charge."""
    rules = with_failover(failover={"stripe": "adyen"})
    recently = down("stripe", "adyen")
    assert rules.route(charge(), down=recently, down_now=down("stripe")).psp == "adyen"
    assert rules.route(charge(), down=recently).psp == "stripe"
    assert rules.route(charge(), down=recently, down_now=down("stripe", "adyen")).psp == "stripe"


def test_failover_names_the_rule_it_replaced() -> None:
    rules = with_failover({"name": "eur-cards", "psp": "adyen", "currencies": ["EUR"], "methods": ["card"]},
                          failover={"adyen": "stripe"})
    assert rules.route(charge(), down=down("adyen")) == Route("stripe", "eur-cards/failover", failover_from="adyen")
    # failover PSPs are not "possible" ahead of a charge: a charge fails over only where `takes` says it can
    assert with_failover(failover={"stripe": "adyen"}).possible_psps("USD") == {"stripe"}


def test_failover_only_where_the_other_psp_takes_the_amount() -> None:
    rules = with_failover(failover={"stripe": "adyen"})
    refuses = lambda psp, c: psp != "adyen"  # noqa: E731
    assert rules.route(charge(), down=down("stripe"), takes=refuses).psp == "stripe"


def test_a_failover_psp_is_one_a_charge_may_be_placed_at() -> None:
    assert with_failover(failover={"stripe": "adyen"}).psps == {"stripe", "adyen"}
    assert with_failover(failover={}).psps == {"stripe"}


@pytest.mark.parametrize("failover", [["adyen"], {"stripe": "stripe"}, {"stripe": "psp9"}, {"psp9": "stripe"}])
def test_a_failover_that_cannot_be_read_stops_the_start(failover: Any) -> None:
    with pytest.raises(RoutingConfigError):
        with_failover(failover=failover)
