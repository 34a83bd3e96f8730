"""Which PSP charges a checkout's charge (one currency of it): rules in configuration, the first that matches wins.

Pure: no I/O, no PSP SDK. The rules come from the `PSP_ROUTING` setting (functions/shared/config.py), JSON:

    {"default": "stripe",
     "rules": [{"name": "eu-cards", "psp": "stripe", "currencies": ["EUR"], "methods": ["card"],
                "buyer_countries": ["NL", "DE"], "sellers": ["acct_1"],
                "amount": {"currency": "EUR", "min": "10.00", "max": "5000.00"}}],
     "failover": {"stripe": "adyen"}}

A rule's criteria are all optional and all must hold (a missing one matches anything): `currencies` (ISO codes),
`methods` (the API's payment method types: card, paypal, sepa_debit, us_bank_account), `buyer_countries` (ISO
3166 alpha-2; a checkout without a country matches no rule that names countries), `sellers` (every seller of the
charge must be listed: a rule for some sellers never drags another seller's order along), `amount` (the charge's
total, inclusive bounds in major units as the API writes them; its currency is the only one the rule matches).

`failover` (optional) names, for a PSP, the PSP that takes its new charges while it is down (its circuit breaker
open: functions/shared/breaker.py), when that PSP takes the charge's method. Routing itself stays pure: whether a
PSP is down is the caller's answer (`down`), and a failover route is only ever taken for a payment method issued
by the failover PSP (`owner`): a card token is bound to the PSP that issued it, so the storefront learns the PSP
before the buyer's card is tokenized (POST /v1/payment_routes) and a charge never changes PSP once placed
(docs/decisions.md 2026-12-07, failover).

The configuration is validated whole at cold start (`parse_routing`): an unknown key, a PSP that cannot be routed
to, an amount finer than its currency, an empty list, min above max: RoutingConfigError, and the function does not
start. Nothing is ever silently routed by a rule that was misread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from functions.shared.money import CURRENCY_EXPONENTS, Money, MoneyError

DEFAULT_PSP = "stripe"
ADYEN = "adyen"
# PSPs whose charges are wired (the executor's charge step). Adyen charges cards through the port (functions/executor/
# handler.py); its refunds, notifications (REFUND) and settlement files are wired too (docs/decisions.md 2026-12-07).
ROUTABLE_PSPS: tuple[str, ...] = (DEFAULT_PSP, ADYEN)
METHODS = ("card", "paypal", "sepa_debit", "us_bank_account")  # online methods; checks and money orders never route
# The methods a PSP charges here (absent: all of METHODS). A rule routing to Adyen must name cards only, and Adyen
# cannot be the default, which takes every method: a PayPal or SEPA checkout is never routed where it cannot be paid.
PSP_METHODS: dict[str, tuple[str, ...]] = {ADYEN: ("card",)}
MAX_RULES = 100
MAX_LIST = 1000  # entries of one criterion (sellers are the long ones)
_RULE_KEYS = {"name", "psp", "currencies", "methods", "buyer_countries", "sellers", "amount"}
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class RoutingConfigError(ValueError):
    """The routing configuration cannot be read exactly as written: the function refuses to start."""


@dataclass(frozen=True)
class Charge:
    """What routing looks at: one charge (a checkout in one currency)."""

    amount: Money
    method: str
    buyer_country: str | None
    sellers: frozenset[str]


@dataclass(frozen=True)
class Rule:
    name: str
    psp: str
    currencies: frozenset[str] | None = None
    methods: frozenset[str] | None = None
    buyer_countries: frozenset[str] | None = None
    sellers: frozenset[str] | None = None
    amount_min: Money | None = None
    amount_max: Money | None = None

    def matches(self, charge: Charge) -> bool:
        currency = charge.amount.currency
        bound = self.amount_min or self.amount_max
        return ((self.currencies is None or currency in self.currencies)
                and (self.methods is None or charge.method in self.methods)
                and (self.buyer_countries is None or charge.buyer_country in self.buyer_countries)
                and (self.sellers is None or bool(charge.sellers) and charge.sellers <= self.sellers)
                and (bound is None or bound.currency == currency)
                and (self.amount_min is None or self.amount_min <= charge.amount)
                and (self.amount_max is None or charge.amount <= self.amount_max))


FAILOVER_SUFFIX = "/failover"


@dataclass(frozen=True)
class Route:
    psp: str
    rule: str  # the matching rule's name; "" when the default decided; "<rule or default>/failover" on failover
    failover_from: str = ""  # the PSP the rules chose, down when this route was taken instead


def never_down(_psp: str) -> bool:
    return False


@dataclass(frozen=True)
class Routing:
    rules: tuple[Rule, ...] = ()
    default: str = DEFAULT_PSP
    failover: tuple[tuple[str, str], ...] = ()  # (PSP, the PSP that takes its new charges while it is down)

    def route(self, charge: Charge, *, owner: str | None = None, down: Callable[[str], bool] = never_down,
              down_now: Callable[[str], bool] | None = None,
              takes: Callable[[str, Charge], bool] = lambda _psp, _charge: True) -> Route:
        """The first rule that matches decides; none does: the default. With `down` saying the chosen PSP is down,
        its failover PSP takes the charge when it charges the method, and, with `owner` given (the PSP that
        issued the buyer's payment method), only when it is that owner: a token can be charged only where it was
        issued, so a charge placed with the chosen PSP's token stays there (it waits for the PSP's return).
        `takes`: whether a PSP can charge this amount (its units and bounds, the caller's knowledge). `down_now`
        (default: `down`) judges the failover PSP: down at this moment, where `down` may keep a recovered PSP "down"
        for a grace period (a route the storefront was given while it was down is honoured)."""
        chosen = self._by_rules(charge)
        if owner == chosen.psp:
            return chosen
        alternative = self.failover_for(chosen.psp)
        if (alternative and (owner is None or owner == alternative)
                and charge.method in PSP_METHODS.get(alternative, METHODS) and takes(alternative, charge)
                and down(chosen.psp) and not (down_now or down)(alternative)):
            return Route(alternative, (chosen.rule or "default") + FAILOVER_SUFFIX, failover_from=chosen.psp)
        return chosen

    def failover_for(self, psp: str) -> str:
        return dict(self.failover).get(psp, "")

    @property
    def psps(self) -> frozenset[str]:
        """Every PSP a charge may be placed at: the default's, the rules', the failover ones."""
        return frozenset({self.default, *(rule.psp for rule in self.rules), *(to for _, to in self.failover)})

    def _by_rules(self, charge: Charge) -> Route:
        for rule in self.rules:
            if rule.matches(charge):
                return Route(rule.psp, rule.name)
        return Route(self.default, "")

    def possible_psps(self, currency: str) -> frozenset[str]:
        """Every PSP a charge in `currency` may be routed to, whatever its amount, method, country and sellers: what
        a single order can be checked against before its charge's total is known. Rules are read in order; one that
        asks nothing but the currency ends the list (nothing after it is reached). Failover PSPs are not among them:
        a charge fails over only where `takes` says the PSP can charge it."""
        psps: set[str] = set()
        for rule in self.rules:
            bound = rule.amount_min or rule.amount_max
            if (rule.currencies is not None and currency not in rule.currencies) or (
                    bound is not None and bound.currency != currency):
                continue
            psps.add(rule.psp)
            if bound is None and rule.methods is None and rule.buyer_countries is None and rule.sellers is None:
                return frozenset(psps)
        return frozenset(psps | {self.default})


def parse_routing(text: str, default: str = DEFAULT_PSP, routable: Iterable[str] = ROUTABLE_PSPS) -> Routing:
    """The routing of the `PSP_ROUTING` text ("" or absent: no rules, `default` for everything)."""
    allowed = tuple(routable)
    if not text.strip():
        return Routing((), _default(default, allowed))
    try:
        config = json.loads(text)
    except ValueError as error:
        raise RoutingConfigError(f"PSP_ROUTING is not JSON: {error}") from None
    if not isinstance(config, dict) or set(config) - {"default", "rules", "failover"}:
        raise RoutingConfigError('PSP_ROUTING must be an object with "default", "rules" and "failover" only')
    rules = config.get("rules", [])
    if not isinstance(rules, list) or len(rules) > MAX_RULES:
        raise RoutingConfigError(f'"rules" must be a list of at most {MAX_RULES}')
    parsed = tuple(_rule(rule, index, allowed) for index, rule in enumerate(rules))
    names = [rule.name for rule in parsed]
    if len(set(names)) != len(names):
        raise RoutingConfigError("two rules have the same name")
    return Routing(parsed, _default(config.get("default", default), allowed),
                   _failover(config.get("failover", {}), allowed))


def _failover(raw: Any, allowed: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        raise RoutingConfigError('"failover" must be an object: {"<psp>": "<the psp that takes over>"}')
    pairs = []
    for psp, alternative in sorted(raw.items()):
        _psp(psp, allowed, "failover")
        _psp(alternative, allowed, f"failover of {psp}")
        if psp == alternative:
            raise RoutingConfigError(f"failover: {psp} cannot take over from itself")
        pairs.append((str(psp), str(alternative)))
    return tuple(pairs)


def _rule(raw: Any, index: int, allowed: tuple[str, ...]) -> Rule:
    where = f"rule {index}"
    if not isinstance(raw, dict):
        raise RoutingConfigError(f"{where} is not an object")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RoutingConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = raw.get("name", f"rule-{index}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RoutingConfigError(f"{where}: name must be 1-64 characters of letters, digits, _ . : -")
    where = f"rule {name!r}"
    currencies = _set(raw, "currencies", where, lambda c: c in CURRENCY_EXPONENTS, "an ISO 4217 code we accept")
    methods = _set(raw, "methods", where, lambda m: m in METHODS, f"one of {', '.join(METHODS)}")
    countries = _set(raw, "buyer_countries", where, lambda c: bool(_COUNTRY.match(c)), "an ISO 3166 alpha-2 code")
    sellers = _set(raw, "sellers", where, lambda s: 0 < len(s) <= 255, "a seller account")
    amount_min, amount_max = _amounts(raw.get("amount"), where)
    if amount_min or amount_max:
        currency = (amount_min or amount_max).currency  # type: ignore[union-attr]
        if currencies is not None and currencies != {currency}:
            raise RoutingConfigError(f"{where}: an amount range in {currency} with other currencies listed")
    psp = _psp(raw.get("psp"), allowed, where)
    only = PSP_METHODS.get(psp)
    if only is not None and (methods is None or not methods <= set(only)):
        raise RoutingConfigError(f"{where}: {psp} charges {', '.join(only)} only here: the rule must say "
                                 f"\"methods\": {json.dumps(list(only))}")
    return Rule(name, psp, currencies, methods, countries, sellers, amount_min, amount_max)


def _default(value: Any, allowed: tuple[str, ...]) -> str:
    psp = _psp(value, allowed, "the default")
    if psp in PSP_METHODS:
        raise RoutingConfigError(f"the default takes every method; {psp} charges {', '.join(PSP_METHODS[psp])} only: "
                                 "route to it by rules")
    return psp


def _psp(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise RoutingConfigError(f"{where}: PSP {value!r} cannot be routed to (routable: {', '.join(allowed)})")
    return str(value)


def _set(raw: dict[str, Any], key: str, where: str, valid: Any, what: str) -> frozenset[str] | None:
    if key not in raw:
        return None
    values = raw[key]
    if not isinstance(values, list) or not values or len(values) > MAX_LIST:
        raise RoutingConfigError(f"{where}: {key} must be a non-empty list of at most {MAX_LIST}")
    for value in values:
        if not isinstance(value, str) or not valid(value):
            raise RoutingConfigError(f"{where}: {key} entry {value!r} is not {what}")
    return frozenset(values)


def _amounts(raw: Any, where: str) -> tuple[Money | None, Money | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, dict) or set(raw) - {"currency", "min", "max"} or not ({"min", "max"} & set(raw)):
        raise RoutingConfigError(f'{where}: amount must be {{"currency", "min" and/or "max"}}')
    currency = raw.get("currency")
    if currency not in CURRENCY_EXPONENTS:
        raise RoutingConfigError(f"{where}: amount currency {currency!r} is not one we accept")
    try:
        low = Money.from_major(raw["min"], currency) if "min" in raw else None
        high = Money.from_major(raw["max"], currency) if "max" in raw else None
    except MoneyError as error:
        raise RoutingConfigError(f"{where}: amount: {error}") from None
    if low is not None and high is not None and high < low:
        raise RoutingConfigError(f"{where}: amount min {low} is above max {high}")
    return low, high
