"""The API's request and response bodies. The OpenAPI document is generated from these models."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from functions.auth import tenancy
from functions.shared import adyen_units, breaker, psp_units
from functions.shared.config import settings
from functions.shared.errors import NotChargeableAtPsp
from functions.shared.money import CURRENCY_EXPONENTS, Money, MoneyError
from functions.shared.names import ADYEN_CARD_PREFIX, charge_key
from functions.shared.routing import ADYEN, DEFAULT_PSP, Charge, Route, Routing
from functions.shared.status import PayoutStatus

# One DynamoDB transaction holds the event, every order and one charge per currency (limit 100 items).
MAX_ORDERS_PER_CHECKOUT = 50
MAX_CURRENCIES_PER_CHECKOUT = 10

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
AccountId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-:.]{1,64}$")]


# Documented in the OpenAPI schema; the validators below check more (the currency's decimals, the PSP's bounds).
AMOUNT_PATTERN = r"^[0-9]{1,15}(\.[0-9]{1,3})?$"


class ApiModel(BaseModel):
    """Validators built on first use, not at import: a request builds only its route's models (cold start).
    A validation error never quotes the input: it may carry a buyer's name or email into a log."""

    model_config = ConfigDict(defer_build=True, hide_input_in_errors=True)


class BuyerInfo(ApiModel):
    model_config = ConfigDict(extra="forbid")

    buyer_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    email: Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None


class CreditCardInfo(ApiModel):
    """A PSP payment-method token (pm_...). Card numbers are never accepted."""

    model_config = ConfigDict(extra="forbid")

    payment_method: Annotated[str, StringConstraints(pattern=r"^pm_[A-Za-z0-9_]{1,100}$")]


# Paid by the buyer outside any PSP (issue 17 point 5): no token; the orders wait for the funds an operator records.
OFFLINE_PAYMENT_METHOD_TYPES = ("check", "money_order")
REDIRECT_PAYMENT_METHOD_TYPES = ("paypal",)  # the buyer approves on the method's own page, then is sent back
# Bank debits: the buyer accepts a mandate; the bank answers in days. Each takes one currency.
DEBIT_CURRENCIES = {"sepa_debit": "EUR", "us_bank_account": "USD"}


class OnlineAcceptance(ApiModel):
    model_config = ConfigDict(extra="forbid")

    ip_address: IPvAnyAddress
    user_agent: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class CustomerAcceptance(ApiModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["online"]
    online: OnlineAcceptance


class MandateData(ApiModel):
    """The buyer's acceptance of a direct debit mandate, in Stripe's shape (sent on to the PaymentIntent)."""

    model_config = ConfigDict(extra="forbid")

    customer_acceptance: CustomerAcceptance


# Each PSP's checks of an amount (functions/shared/psp_units.py: Stripe's; adyen_units.py: Adyen's): `unit` whether
# one order's amount can be represented, `chargeable` whether a charge's total can be charged.
PSP_AMOUNT_CHECKS: dict[str, tuple[Callable[[Money], Any], Callable[[Money], Any]]] = {
    DEFAULT_PSP: (psp_units.to_stripe_amount, psp_units.check_chargeable),
    ADYEN: (adyen_units.adyen_amount, adyen_units.check_chargeable),
}


def _routing() -> Routing:
    """The routing the API places checkouts with (settings' PSP_ROUTING). A process without the functions'
    settings (unit tests, the OpenAPI generator) validates with the default routing: no checkout can be placed
    there anyway, since placing one reads the same settings."""
    try:
        return settings().routing
    except ValidationError:
        return Routing()


# While a request is validated: what it was told of each PSP's health (read once, so every check of the request and
# its placing see the same answer; functions/shared/breaker.py `psp_down`).
_down_seen: ContextVar[dict[str, bool] | None] = ContextVar("down_seen", default=None)
# Whether a checkout was placed already at a PSP (`_placed_at`), as one request's validation read it
_placed_seen: ContextVar[dict[tuple[str, str, tuple[str, ...]], bool] | None] = ContextVar("placed_seen", default=None)


def recently_down(psp: str) -> bool:
    """Down for placing a charge: its breaker open, or closed less than failover_grace_s ago (a route given to the
    storefront while it was down is honoured). Only ever asked for a payment method of the failover PSP."""
    seen = _down_seen.get()
    if seen is not None and psp in seen:
        return seen[psp]
    try:
        grace = settings().failover_grace_s
    except ValidationError:  # no function settings (unit tests, the OpenAPI generator): no breaker either
        return False
    down = breaker.psp_down(psp, within_s=grace)
    if seen is not None:
        seen[psp] = down
    return down


def down_now(psp: str) -> bool:
    """Down at this moment (its breaker open), with no grace: how a failover PSP is judged before a charge goes
    there. Read once per request, as `recently_down`."""
    seen, key = _down_seen.get(), psp + NOW_SUFFIX
    if seen is not None and key in seen:
        return seen[key]
    down = breaker.psp_down(psp)
    if seen is not None:
        seen[key] = down
    return down


NOW_SUFFIX = "@now"  # down_now's answers, kept beside recently_down's in one request's _down_seen


Encrypted = Annotated[str, StringConstraints(pattern=r"^[^\s]{1,5000}$")]


class AdyenCard(ApiModel):
    """A card as Adyen's Drop-in or Card Component gives it (`state.data.paymentMethod`), for a checkout whose charge
    is routed to Adyen: its fields encrypted in the browser with Adyen's public key, which only Adyen can read.
    Passed on to Adyen exactly as sent. A card number in clear anywhere in the body is refused before parsing."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["scheme"]
    encryptedCardNumber: Encrypted  # Adyen's own field names, passed on as they are
    encryptedExpiryMonth: Encrypted
    encryptedExpiryYear: Encrypted
    encryptedSecurityCode: Encrypted | None = None
    holderName: Annotated[str, StringConstraints(max_length=100)] | None = None
    brand: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,40}$")] | None = None
    checkoutAttemptId: Annotated[str, StringConstraints(max_length=200)] | None = None


class AdyenBrowserInfo(ApiModel):
    """The buyer's browser as Adyen's Drop-in gives it (`state.data.browserInfo`): what the issuer's 3-D Secure 2
    server reads to decide between frictionless and a challenge, and to size the challenge."""

    model_config = ConfigDict(extra="forbid")

    acceptHeader: Annotated[str, StringConstraints(min_length=1, max_length=2000)]  # Adyen's own field names
    colorDepth: Annotated[int, Field(ge=1, le=64)]
    javaEnabled: bool
    language: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,35}$")]
    screenHeight: Annotated[int, Field(ge=0, le=100_000)]
    screenWidth: Annotated[int, Field(ge=0, le=100_000)]
    timeZoneOffset: Annotated[int, Field(ge=-1440, le=1440)]
    userAgent: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    javaScriptEnabled: bool | None = None


class AdyenBrowser(ApiModel):
    """What Adyen's native 3-D Secure 2 wants besides the card: the buyer's browser and the storefront's origin (the
    page Drop-in runs on). Sent with an Adyen card, the charge asks Adyen for native 3-D Secure 2
    (a `threeDS2` action Drop-in runs in the page); without it, Adyen sends a challenged buyer to its redirect flow."""

    model_config = ConfigDict(extra="forbid")

    browserInfo: AdyenBrowserInfo
    origin: Annotated[str, StringConstraints(max_length=300, pattern=r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")]


class PaymentMethodInfo(ApiModel):
    """A checkout's payment method as Stripe.js creates it: a card token (pm_...), maybe from a wallet (Apple Pay,
    Google Pay), or a PayPal PaymentMethod (pm_..., type paypal) with the storefront's `return_url`, where PayPal
    sends the buyer back after approving, or a bank debit's PaymentMethod with the buyer's mandate acceptance, or a
    check or money order (no token: the checkout then shows where to send it and the reference to write on it)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["card", "sepa_debit", "us_bank_account", "paypal", "check", "money_order"]
    token: Annotated[str, StringConstraints(pattern=r"^pm_[A-Za-z0-9_]{1,100}$")] | None = None
    # A card for Adyen instead of a Stripe token: for a checkout routed to Adyen (its one currency's charge)
    adyen: AdyenCard | None = None  # with its return_url: where Adyen's 3-D Secure redirect sends the buyer back
    adyen_browser: AdyenBrowser | None = None  # with `adyen` only: asks Adyen for native 3-D Secure 2
    wallet: Literal["apple_pay", "google_pay"] | None = None
    return_url: Annotated[str, StringConstraints(max_length=2000, pattern=r"^https://[^\s]+$")] | None = None
    mandate_data: MandateData | None = None

    @model_validator(mode="after")
    def _supported(self) -> PaymentMethodInfo:
        if self.is_offline:
            if self.token is not None or self.wallet is not None:
                raise PydanticCustomError("offline_payment_method_has_token",
                                          "a {type} has no token and no wallet", {"type": self.type})
        elif self.adyen is not None:
            if self.type != "card" or self.token is not None or self.wallet is not None:
                raise PydanticCustomError("payment_method_ambiguous",
                                          "adyen is a card (type card), sent instead of a token and a wallet")
        elif self.token is None:
            raise PydanticCustomError("payment_method_token_missing", "a {type} payment_method needs its token",
                                      {"type": self.type})
        if self.adyen_browser is not None and self.adyen is None:
            raise PydanticCustomError("adyen_browser_not_allowed",
                                      "adyen_browser goes with an Adyen card (payment_method.adyen) only")
        # Adyen may send a card's buyer to the issuer's 3-D Secure page (its redirect flow, also its fallback from
        # native), and every /payments request names where they come back: the storefront's page, which reads
        # redirectResult and posts it to payment_details
        redirects = self.type in REDIRECT_PAYMENT_METHOD_TYPES or self.adyen is not None
        if redirects and self.return_url is None:
            kind = "an Adyen card's" if self.adyen is not None else f"a {self.type}"
            raise PydanticCustomError("return_url_missing",
                                      "{kind} payment may send the buyer to another page and back to return_url "
                                      "(https): send it", {"kind": kind})
        if not redirects and self.return_url is not None:
            raise PydanticCustomError("return_url_not_allowed",
                                      "only a redirect method (paypal) or an Adyen card takes a return_url")
        if self.wallet is not None and self.type != "card":
            raise PydanticCustomError("wallet_not_allowed", "a wallet (Apple Pay, Google Pay) pays with a card token")
        debit = self.type in DEBIT_CURRENCIES
        if debit and self.mandate_data is None:
            raise PydanticCustomError("mandate_data_missing",
                                      "a {type} debit needs the buyer's mandate acceptance (mandate_data)",
                                      {"type": self.type})
        if not debit and self.mandate_data is not None:
            raise PydanticCustomError("mandate_data_not_allowed", "only a bank debit takes mandate_data")
        return self

    @property
    def is_offline(self) -> bool:
        return self.type in OFFLINE_PAYMENT_METHOD_TYPES

    @property
    def psp(self) -> str:
        """The PSP that can charge this payment method: whose token (or encrypted card) it is."""
        return ADYEN if self.adyen is not None else DEFAULT_PSP


class RouteOrder(ApiModel):
    """An order as routing sees it: its seller, amount and currency."""

    model_config = ConfigDict(extra="forbid")

    seller_account: AccountId
    amount: str = Field(description='Decimal string in major units, e.g. "12.34"; at most the currency\'s decimals',
                        examples=["12.34"], json_schema_extra={"pattern": AMOUNT_PATTERN})
    currency: str = Field(description="ISO 4217 code", examples=["USD"],
                          json_schema_extra={"enum": sorted(CURRENCY_EXPONENTS)})

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise PydanticCustomError("invalid_amount", 'amount must be a decimal string such as "12.34"')
        return value

    @model_validator(mode="after")
    def _valid_money(self) -> RouteOrder:
        """A positive amount the PSP of its charge can represent: the route PaymentRequest found for its currency
        (`_order_routes`); an order validated on its own is checked against every PSP its currency may reach."""
        money = self.money()
        routes = _order_routes.get()
        if routes is None or money.currency not in routes and "*" not in routes:
            psps = _routing().possible_psps(money.currency)
        else:
            psps = frozenset({routes.get(money.currency) or routes["*"]})
        with _refused_by_psp():
            for psp in sorted(psps, reverse=True):  # Stripe's refusal first
                PSP_AMOUNT_CHECKS[psp][0](money)
        return self

    def money(self) -> Money:
        return positive_money(self.amount, self.currency)


class PaymentOrderRequest(RouteOrder):
    payment_order_id: Identifier


class PaymentRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    buyer_info: BuyerInfo
    checkout_id: Identifier
    credit_card_info: CreditCardInfo | None = None
    payment_method: PaymentMethodInfo | None = None
    payment_orders: list[PaymentOrderRequest] = Field(min_length=1, max_length=MAX_ORDERS_PER_CHECKOUT)
    _down: dict[str, bool] = PrivateAttr(default_factory=dict)  # each PSP's health as validation saw it

    def psp_down(self, psp: str) -> bool:
        """What validation was told of `psp` (read now if it never asked): placing routes as validation did."""
        if psp not in self._down:
            self._down[psp] = recently_down(psp)
        return self._down[psp]

    def psp_down_now(self, psp: str) -> bool:
        """`down_now` as validation was told it (read now if it never asked)."""
        if psp + NOW_SUFFIX not in self._down:
            self._down[psp + NOW_SUFFIX] = down_now(psp)
        return self._down[psp + NOW_SUFFIX]

    @property
    def owner(self) -> str:
        """The PSP that issued the payment method (a card token is charged only there)."""
        return self.payment_method.psp if self.payment_method is not None else DEFAULT_PSP

    @field_validator("payment_orders", mode="wrap")
    @classmethod
    def _orders_see_their_route(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        """Each order's amount is checked against the PSP its currency's charge is routed to: routed here from the
        raw orders (the charge's total, sellers, method and country), before the orders are validated."""
        token = _order_routes.set(_raw_routes(value, info.data))
        try:
            return handler(value)
        finally:
            _order_routes.reset(token)

    @field_validator("payment_orders")
    @classmethod
    def _charges_within_psp_limits(cls, orders: list[PaymentOrderRequest], info: ValidationInfo
                                   ) -> list[PaymentOrderRequest]:
        # The PSP charges once per currency for the sum of its orders: the routed PSP's minimum and maximum apply to
        # that sum. (Fields declared above payment_orders are in info.data when they were valid.)
        method, buyer = info.data.get("payment_method"), info.data.get("buyer_info")
        owner = method.psp if method is not None else DEFAULT_PSP
        routes = {} if method is not None and method.is_offline else charge_routes(
            orders, method.type if method is not None else "card", buyer.country if buyer is not None else None,
            owner=owner)
        if _replay_placed_at(info.data.get("checkout_id"), routes, owner):
            routes = {currency: Route(owner, "") for currency in routes}
        for total in currency_totals(orders).values():
            route = routes.get(total.currency, Route(DEFAULT_PSP, ""))
            with _refused_by_psp(f"{total.currency} total of the checkout: "):
                PSP_AMOUNT_CHECKS[route.psp][1](total)
        return orders

    @model_validator(mode="after")
    def _one_payment_method(self) -> PaymentRequest:
        if (self.credit_card_info is None) == (self.payment_method is None):
            raise PydanticCustomError("payment_method_ambiguous" if self.payment_method else "payment_method_missing",
                                      "send exactly one of credit_card_info and payment_method")
        return self

    @property
    def token(self) -> str:
        """The PSP PaymentMethod the checkout is charged with, whichever field carried it; for a check or money
        order, its type (what the orders and charges store as their payment_method); for an Adyen card, its
        `paymentMethod` object as canonical JSON (what functions/shared/psp_adyen.py sends)."""
        if self.payment_method is not None and self.payment_method.adyen is not None:
            return json.dumps(self.payment_method.adyen.model_dump(exclude_none=True), sort_keys=True,
                              separators=(",", ":"))
        if self.payment_method is not None:
            return self.payment_method.token or self.payment_method.type
        assert self.credit_card_info is not None
        return self.credit_card_info.payment_method

    @property
    def stored_payment_method(self) -> str:
        """What the checkout, its orders and its charges keep as their payment_method: the token, except an Adyen
        card's encrypted fields (its security code among them), which only the charge keeps, apart
        (`adyen_payment_method`, removed when the charge is final), and which are named here by a fingerprint."""
        if self.payment_method is not None and self.payment_method.adyen is not None:
            return f"{ADYEN_CARD_PREFIX}{hashlib.sha256(self.token.encode()).hexdigest()[:16]}"
        return self.token

    @property
    def offline_method(self) -> str | None:
        """check | money_order when the buyer pays outside the PSP, else None."""
        method = self.payment_method
        return method.type if method is not None and method.is_offline else None

    @property
    def wallet(self) -> str | None:
        return self.payment_method.wallet if self.payment_method is not None else None

    @property
    def method_fields(self) -> dict[str, Any]:
        """What the charges of a method other than a card store beside its token: its type, a redirect's
        return_url, a debit's mandate_data; an Adyen card's encrypted fields. {} for a Stripe card (as before)."""
        method = self.payment_method
        if method is not None and method.adyen is not None:  # the encrypted card, for the executor only
            browser = method.adyen_browser
            fields = {"adyen_payment_method": self.token, "return_url": method.return_url}
            if browser is not None:
                fields["adyen_browser"] = json.dumps(browser.model_dump(exclude_none=True), sort_keys=True,
                                                     separators=(",", ":"))
            return fields
        if method is None or method.type == "card" or method.is_offline:  # offline charges keep their own fields
            return {}
        fields: dict[str, Any] = {"payment_method_type": method.type}
        if method.return_url is not None:
            fields["return_url"] = method.return_url
        if method.mandate_data is not None:
            fields["mandate_data"] = method.mandate_data.model_dump(mode="json")
        return fields

    @model_validator(mode="after")
    def _method_currencies(self) -> PaymentRequest:
        method = self.payment_method.type if self.payment_method is not None else "card"
        if method not in ("paypal", *DEBIT_CURRENCIES):
            return self
        currencies = sorted({order.money().currency for order in self.payment_orders})
        if method in DEBIT_CURRENCIES:
            if currencies != [DEBIT_CURRENCIES[method]]:
                raise PydanticCustomError("payment_method_currency_not_supported",
                                          "a {method} debit is in {currency} only",
                                          {"method": method, "currency": DEBIT_CURRENCIES[method]})
            return self
        refused = [c for c in currencies if c not in psp_units.PAYPAL_CURRENCIES]
        if refused:
            raise PydanticCustomError("payment_method_currency_not_supported",
                                      "PayPal (through Stripe) does not take {currencies}",
                                      {"currencies": ", ".join(refused)})
        if len(currencies) > 1:
            # one approval on PayPal's page pays one PaymentIntent: a checkout in two currencies would need two
            raise PydanticCustomError("payment_method_single_currency",
                                      "a PayPal checkout is charged in one currency; this one has {currencies}",
                                      {"currencies": ", ".join(currencies)})
        return self

    @model_validator(mode="after")
    def _routed_where_the_method_can_be_charged(self) -> PaymentRequest:
        """A token (or an encrypted card) can be charged only at the PSP that issued it: every charge of the
        checkout must be routed there. An Adyen card pays one payment: its checkout has one currency."""
        method = self.payment_method
        if method is not None and method.is_offline:
            return self
        owner = self.owner
        kind = method.type if method is not None else "card"
        country = self.buyer_info.country
        routes = charge_routes(self.payment_orders, kind, country, owner=owner)
        elsewhere = sorted(f"{currency} to {route.psp}" for currency, route in routes.items() if route.psp != owner)
        if elsewhere and not _replay_placed_at(self.checkout_id, routes, owner):
            raise PydanticCustomError(
                "payment_method_not_for_routed_psp",
                "this payment method is {owner}'s, and the checkout's charges are routed {routes}: send the card "
                "as that PSP's token (payment_method.token for stripe, payment_method.adyen for adyen)",
                {"owner": owner, "routes": ", ".join(elsewhere)})
        if owner == ADYEN and len(routes) > 1:
            raise PydanticCustomError("payment_method_single_currency",
                                      "an Adyen card pays one currency's charge; this checkout has {currencies}",
                                      {"currencies": ", ".join(sorted(routes))})
        return self

    @model_validator(mode="after")
    def _unique_order_ids(self) -> PaymentRequest:
        seen: set[str] = set()
        for order in self.payment_orders:
            if order.payment_order_id in seen:
                raise PydanticCustomError(
                    "duplicate_payment_order_id",
                    "payment_order_id {id} appears twice in this checkout",
                    {"id": order.payment_order_id},
                )
            seen.add(order.payment_order_id)
        return self

    @model_validator(mode="after")
    def _few_currencies(self) -> PaymentRequest:
        currencies = {order.money().currency for order in self.payment_orders}
        if len(currencies) > MAX_CURRENCIES_PER_CHECKOUT:
            raise PydanticCustomError(
                "too_many_currencies", "a checkout is charged once per currency, in at most {limit} currencies",
                {"limit": MAX_CURRENCIES_PER_CHECKOUT},
            )
        return self

    # Last on purpose: pydantic applies a class's model validators in the order they are defined, each around the
    # ones before it, so only a wrap validator defined after the "after" validators (the route check among them)
    # holds the one look at each PSP's health while they run. Defined first, it returned before they ran: they
    # read the breaker on their own and placing read it again, and a breaker that closed (or could not be read) in
    # between placed an Adyen card's charge at Stripe (chaos seed 4, docs/decisions.md 2026-12-07).
    @model_validator(mode="wrap")
    @classmethod
    def _one_look_at_psp_health(cls, data: Any, handler: Any) -> Any:
        token, placed = _down_seen.set({}), _placed_seen.set({})
        try:
            request = handler(data)
            request._down = dict(_down_seen.get() or {})
            return request
        finally:
            _down_seen.reset(token)
            _placed_seen.reset(placed)


def positive_money(amount: str, currency: str) -> Money:
    """A request's decimal amount in its currency, greater than zero, or the validation error saying why."""
    try:
        money = Money.from_major(amount, currency)
    except MoneyError as error:
        raise PydanticCustomError(error.code, error.message) from None
    if not money.is_positive():
        raise PydanticCustomError("amount_not_positive", "amount must be greater than zero")
    return money


# The PSP of each currency's charge while PaymentRequest validates its orders ({"*": psp} for all currencies).
_order_routes: ContextVar[dict[str, str] | None] = ContextVar("order_routes", default=None)


def _raw_routes(value: Any, data: dict[str, Any]) -> dict[str, str] | None:
    """The route of each currency of raw orders (dicts from JSON, or models), as placing will route them. An order
    whose amount cannot be read is left out (it fails its own validation); so is a currency with none readable."""
    method, buyer = data.get("payment_method"), data.get("buyer_info")
    if method is not None and method.is_offline:
        return {"*": DEFAULT_PSP}  # no PSP charges a check: Stripe's units, as always
    if not isinstance(value, list):
        return None
    totals: dict[str, Money] = {}
    sellers: dict[str, set[str]] = {}
    for raw in value:
        fields = raw if isinstance(raw, dict) else getattr(raw, "__dict__", {})
        try:
            money = Money.from_major(fields.get("amount"), fields.get("currency"))
        except (MoneyError, TypeError, ValueError, AttributeError):
            continue
        totals[money.currency] = totals.get(money.currency, Money.zero(money.currency)) + money
        sellers.setdefault(money.currency, set()).add(_internal_seller(str(fields.get("seller_account"))))
    routing = _routing()
    kind = method.type if method is not None else "card"
    country = buyer.country if buyer is not None else None
    owner = method.psp if method is not None else DEFAULT_PSP
    takes = _takes(len(totals))
    routes = {currency: routing.route(Charge(total, kind, country, frozenset(sellers[currency])), owner=owner,
                                      down=recently_down, down_now=down_now, takes=takes).psp
              for currency, total in totals.items()}
    return dict.fromkeys(routes, owner) if _replay_placed_at(data.get("checkout_id"), routes, owner) else routes


# The API client the request being validated is from (functions/payment/api.py sets it with the caller): the
# checkout ids in a body are the client's own, stored scoped to it (functions/auth/tenancy.py).
placing_client: ContextVar[str | None] = ContextVar("placing_client", default=None)


def _internal_seller(seller: str) -> str:
    """A seller as the storefront names it, as placing stores it and the routing rules name it: scoped to the
    calling client (functions/auth/tenancy.py), so validation, placing and the route endpoint route alike."""
    client = placing_client.get()
    return seller if client is None else tenancy.scoped(client, seller)


def _replay_placed_at(checkout_id: Any, routes: Mapping[str, Any], owner: str) -> bool:
    """Routes that send a charge away from the payment method's PSP, for a checkout already placed with every charge
    there (a failover's checkout replayed after its grace): its amounts are checked as they were placed, so the
    replay is answered as first placed, never 422 (only then is anything read)."""
    away = any((route.psp if isinstance(route, Route) else route) != owner for route in routes.values())
    return away and isinstance(checkout_id, str) and _placed_at(checkout_id, routes, owner)


def _placed_at(checkout_id: str, routes: Mapping[str, Any], psp: str) -> bool:
    """Whether the caller's checkout `checkout_id` was placed already with every charge at `psp`: a replay of a
    checkout placed during a failover, after the failover PSP's grace ended, answers as first answered (placing
    finds it, and a different body is 409 there), never 422. Read only when the routes refuse the method, so only
    for such a replay."""
    from functions.shared.tables import PaymentTables  # the API's tables; not imported by schema-only users

    client = placing_client.get()
    if client is None:  # validated outside a request (the OpenAPI generator, unit tests): nothing placed
        return False
    seen = _placed_seen.get()  # the request's validators ask up to three times: read once
    asked = (checkout_id, psp, tuple(sorted(routes)))
    if seen is not None and asked in seen:
        return seen[asked]
    internal_id = tenancy.scoped(client, checkout_id)
    try:
        tables = PaymentTables.from_settings()
        charges = [tables.get_charge(charge_key(internal_id, currency)) for currency in routes]
    except (ValidationError, KeyError):  # no function settings (unit tests, the OpenAPI generator)
        return False
    placed = all(charge is not None and charge.get("psp") == psp for charge in charges)
    if seen is not None:
        seen[asked] = placed
    return placed


def charge_routes(orders: list[RouteOrder], method: str, country: str | None, *, owner: str | None,
                  down: Callable[[str], bool] = recently_down,
                  down_now: Callable[[str], bool] | None = down_now) -> dict[str, Route]:
    """Each currency's charge's route (functions/shared/routing.py), as placing the checkout will route it: its
    total, the method, the buyer's country and its sellers (functions/payment/service.py route_charges), for a
    payment method issued by `owner` (None: the route a new card should be tokenized for)."""
    sellers: dict[str, set[str]] = {}
    for order in orders:
        sellers.setdefault(order.money().currency, set()).add(_internal_seller(order.seller_account))
    routing, totals = _routing(), currency_totals(orders)
    takes = _takes(len(totals))
    return {currency: routing.route(Charge(total, method, country, frozenset(sellers[currency])), owner=owner,
                                    down=down, down_now=down_now, takes=takes)
            for currency, total in totals.items()}


def _takes(currencies: int) -> Callable[[str, Charge], bool]:
    """Whether a PSP can take a charge over (failover): its units and bounds allow the total, and an Adyen card,
    which pays one payment, pays the whole checkout (one currency)."""
    def takes(psp: str, charge: Charge) -> bool:
        if psp == ADYEN and currencies > 1:
            return False
        unit, chargeable = PSP_AMOUNT_CHECKS[psp]
        try:
            unit(charge.amount)
            chargeable(charge.amount)
        except NotChargeableAtPsp:
            return False
        return True
    return takes


def currency_totals(orders: list[RouteOrder]) -> dict[str, Money]:
    """The sum of the orders per currency, in order of first appearance: what the PSP is asked to charge."""
    totals: dict[str, Money] = {}
    for order in orders:
        money = order.money()
        totals[money.currency] = totals.get(money.currency, Money.zero(money.currency)) + money
    return totals


@contextmanager
def _refused_by_psp(prefix: str = "") -> Iterator[None]:
    try:
        yield
    except NotChargeableAtPsp as error:
        raise PydanticCustomError(error.code, prefix + error.message) from None


class NextAction(ApiModel):
    """What the buyer must do before the charge can be decided: for 3-D Secure (`use_stripe_sdk`), Stripe.js's
    handleNextAction(client_secret) runs the challenge; for PayPal (`redirect_to_url`), the storefront sends the
    buyer to `url`, and PayPal sends them back to `return_url`; for a US bank account Stripe could not verify at
    once (`verify_with_microdeposits`), the buyer confirms the microdeposits on Stripe's page at `url`; for a card
    charged at Adyen that needs 3-D Secure or a redirect (`adyen_action`), the storefront hands `action` (Adyen's
    action object, as Adyen answered it) to Drop-in's `createFromAction`, and posts what its onAdditionalDetails
    gives (`state.data.details`) to POST /v1/checkouts/{checkout_id}/payment_details."""

    type: Literal["use_stripe_sdk", "redirect_to_url", "verify_with_microdeposits", "adyen_action"]
    client_secret: str | None = None
    url: str | None = None
    return_url: str | None = None
    action: dict[str, Any] | None = None
    action_id: str | None = Field(None, description="an `adyen_action`'s id: send it with the details that answer "
                                                    "it (payment_details), so an answer to a superseded action is "
                                                    "refused, not sent")


class PaymentOrderView(ApiModel):
    payment_order_id: str
    payment_order_status: str
    amount: str
    currency: str
    seller_account: str
    checkout_id: str
    ledger_updated: bool = False
    wallet_updated: bool = False
    psp_reference: str | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    wallet: str | None = None  # apple_pay | google_pay when the card token came from a wallet (issue 17)
    # 3-D Secure (issue 17): while EXECUTING and waiting for the buyer's challenge, and until when it may.
    next_action: NextAction | None = None
    action_expires_at: str | None = None
    # Checks and money orders (issue 17): awaiting | received | not_received | bounced (refunded: see refunds).
    offline_funds: Literal["awaiting", "received", "not_received", "bounced"] | None = None
    # The pay-out (null until known): HELD once SUCCESS, the commission and net once released.
    payout_status: PayoutStatus | None = None
    commission: str | None = None
    seller_net: str | None = None
    transfer_id: str | None = None
    # What the transfer kept back of seller_net for the seller's debt (refund shares it could not give back)
    # and what it sent: seller_net - netted.
    netted: str | None = None
    transferred: str | None = None
    payout_failure_reason: str | None = None
    # Refunds (issue 16 a): what PENDING and SUCCEEDED refunds commit of the order, and each refund.
    refunded: str | None = None
    refunds: list[RefundSummary] | None = None
    # Disputes (issue 16): the chargebacks of the order's charge that take a part of this order (its part).
    disputes: list[DisputeSummary] | None = None


class OfflineInstructions(ApiModel):
    """Where a check or money order goes and what it says (issue 17): one per currency of the checkout, while its
    orders wait for the funds. `reference` must be written on the payment; `due_by`: unpaid then, the orders fail."""

    method: Literal["check", "money_order"]
    pay_to: str
    reference: str
    amount: str
    currency: str
    due_by: str


class CheckoutView(ApiModel):
    checkout_id: str
    is_payment_done: bool
    created_at: str
    next_action: NextAction | None = None
    # Checks and money orders: per currency whose orders still wait for the funds.
    instructions: list[OfflineInstructions] | None = None
    payment_orders: list[PaymentOrderView]


class ErrorDetail(ApiModel):
    field: str | None = None
    code: str
    message: str | None = None


class ErrorBody(ApiModel):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(ApiModel):
    error: ErrorBody


# --- pay-outs ----------------------------------------------------------------------------------------------

PspAccountId = Annotated[str, StringConstraints(pattern=r"^acct_[A-Za-z0-9]{1,64}$")]
MAX_COMMISSION_BPS = 10_000
MAX_AUTO_RELEASE_DAYS = 365


class SellerRequest(ApiModel):
    """PUT /v1/sellers/{seller_account}: the whole registration (an optional field left out is removed)."""

    model_config = ConfigDict(extra="forbid")

    psp_account_id: PspAccountId | None = None
    commission_bps: Annotated[int, Field(strict=True, ge=0, le=MAX_COMMISSION_BPS)]
    auto_release_days: Annotated[int, Field(strict=True, ge=0, le=MAX_AUTO_RELEASE_DAYS)] | None = None


class SellerView(ApiModel):
    seller_account: str
    psp_account_id: str | None = None
    commission_bps: int
    auto_release_days: int | None = None
    created_at: str
    updated_at: str


class ReleaseView(ApiModel):
    payment_order_id: str
    seller_account: str
    currency: str
    gross: str
    commission: str
    seller_net: str
    released_at: str


class BucketAmounts(ApiModel):
    pending: str
    available: str
    transferred: str
    owed: str


class BalanceView(ApiModel):
    seller_account: str
    balances: dict[str, BucketAmounts]  # currency -> buckets


class StatementLine(ApiModel):
    """One wallet movement: what it did to each bucket (signed), and the order's amounts when known."""

    created_at: str
    kind: str
    payment_order_id: str
    currency: str
    gross: str | None = None
    commission: str | None = None
    net: str | None = None
    transfer_id: str | None = None
    pending: str
    available: str
    transferred: str
    owed: str



# --- refunds (issue 16 a) ----------------------------------------------------------------------------------


class RefundRequest(ApiModel):
    """POST /v1/payments/{payment_order_id}/refunds. `amount` in the order's currency; left out: all that
    remains of the order."""

    model_config = ConfigDict(extra="forbid")

    refund_id: Identifier
    amount: str | None = Field(None, description='Decimal string in major units, e.g. "5.00"', examples=["5.00"],
                               json_schema_extra={"pattern": AMOUNT_PATTERN})
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise PydanticCustomError("invalid_amount", 'amount must be a decimal string such as "5.00"')
        return value


class ReversalView(ApiModel):
    id: str | None = None
    status: str  # SUCCEEDED | REFUSED (the seller owes its share: netted from its next transfers)
    failure_code: str | None = None


class RefundView(ApiModel):
    refund_id: str
    payment_order_id: str
    status: str  # PENDING | SUCCEEDED | FAILED
    amount: str
    currency: str
    reason: str | None = None
    psp_refund_id: str | None = None
    timing: str | None = None  # held | released | transferred: where the refund's money came from
    seller_share: str | None = None
    commission_share: str | None = None
    reversal: ReversalView | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    created_at: str
    updated_at: str | None = None


class RefundSummary(ApiModel):
    refund_id: str
    status: str
    amount: str


class DisputeSummary(ApiModel):
    """A dispute's part of one order: OPEN, WON or LOST; `amount` is this order's part of the disputed amount."""

    dispute_id: str
    status: str
    amount: str



# --- checks and money orders (issue 17) ----------------------------------------------------------------------


class OfflinePaymentRequest(ApiModel):
    """POST /v1/checkouts/{checkout_id}/offline_payments: the funds of one currency's charge, as received. Each
    field must match the charge exactly (the reference as printed; case, spaces and O/0, I/1 typed either way)."""

    model_config = ConfigDict(extra="forbid")

    amount: str = Field(description='Decimal string in major units, e.g. "45.00"', examples=["45.00"],
                        json_schema_extra={"pattern": AMOUNT_PATTERN})
    currency: str = Field(description="ISO 4217 code", examples=["USD"],
                          json_schema_extra={"enum": sorted(CURRENCY_EXPONENTS)})
    reference: Annotated[str, StringConstraints(min_length=1, max_length=40)]

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise PydanticCustomError("invalid_amount", 'amount must be a decimal string such as "45.00"')
        return value

    @model_validator(mode="after")
    def _valid_money(self) -> OfflinePaymentRequest:
        self.money()
        return self

    def money(self) -> Money:
        return positive_money(self.amount, self.currency)


class OfflineBounceRequest(ApiModel):
    """POST /v1/checkouts/{checkout_id}/offline_payments/bounce: the bank returned the recorded check."""

    model_config = ConfigDict(extra="forbid")

    currency: str = Field(description="ISO 4217 code", examples=["USD"])
    reference: Annotated[str, StringConstraints(min_length=1, max_length=40)]


class OfflinePaymentView(ApiModel):
    """The funds recorded for a charge (a replay answers the same). status: recorded, or bounced."""

    checkout_id: str
    method: str
    amount: str
    currency: str
    reference: str
    status: str
    recorded_at: str
    bounced_at: str | None = None


MAX_DETAILS = 8  # Adyen's details carry one or two fields (threeDSResult; redirectResult; payload)
# Names as Drop-in gives them, dotted ones of older components included (threeds2.challengeResult); values are
# Adyen's opaque tokens (base64, URL-safe characters): printable ASCII only, so the API's 64 KB body limit bounds
# what is stored (a DynamoDB item holds 400 KB).
DetailName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.]{0,63}$")]
DetailValue = Annotated[str, StringConstraints(min_length=1, max_length=20_000, pattern=r"^[\x20-\x7E]+$")]


class PaymentDetailsRequest(ApiModel):
    """POST /v1/checkouts/{checkout_id}/payment_details: the buyer's answer to a shopper action of the checkout's
    charge in `currency` at Adyen (next_action `adyen_action`): `details` exactly as Drop-in's onAdditionalDetails
    gives them (`state.data.details`, e.g. {"threeDSResult": "..."} or {"redirectResult": "..."}). Sent on to
    Adyen by the executor, never by the API."""

    model_config = ConfigDict(extra="forbid")

    currency: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$")] = Field(
        description="ISO 4217 code of the charge", examples=["EUR"])
    details: dict[DetailName, DetailValue] = Field(min_length=1, max_length=MAX_DETAILS,
                                                   examples=[{"threeDSResult": "eyJ0cmFuc1N0YXR1cyI6IlkifQ=="}])
    action_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] | None = Field(
        None, description="next_action.action_id of the action these details answer (recommended): details for an "
                          "action no longer shown (a fingerprint's, once the challenge replaced it) are refused 409 "
                          "action_superseded")


class PaymentDetailsView(ApiModel):
    """The details recorded for a charge (a replay answers the same): the sweeper's next run sends them to the PSP,
    and the orders finalize from its answer (watch the orders, or the payment_order webhooks)."""

    checkout_id: str
    currency: str
    status: Literal["recorded"] = "recorded"
    recorded_at: str


class RouteRequest(ApiModel):
    """POST /v1/payment_routes: where a prospective checkout's charges would go now, asked before the buyer's card
    is tokenized (a token can be charged only at the PSP that issued it)."""

    model_config = ConfigDict(extra="forbid")

    payment_method_type: Literal["card", "sepa_debit", "us_bank_account", "paypal"] = "card"
    buyer_country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    payment_orders: list[RouteOrder] = Field(min_length=1, max_length=MAX_ORDERS_PER_CHECKOUT)


class ChargeRouteView(ApiModel):
    currency: str
    psp: str
    rule: str = Field(description='the routing rule that chose it ("" the default; "<rule>/failover" on failover)')
    failover_from: str | None = Field(None, description="the PSP the rules chose, down now")


class RouteView(ApiModel):
    routes: list[ChargeRouteView]
    psp: str | None = Field(description="the one PSP whose payment method pays every charge of the checkout; null "
                                        "when its currencies go to different PSPs (split it)")
