"""A storefront as the API sees it: seeded checkouts (buyers, sellers, currencies, cards, declines), the buyer's
browser creating a PaymentMethod as Stripe.js does, and an HTTP client."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlparse

from functions.shared.money import Money

# A watcher's reads (full scans on the local stack, where every read holds moto's table lock) take at most a
# fifth of the time: after a read that took t seconds it waits at least 4 t.
WATCH_PAUSE_FACTOR = 4


def pause_after_read(interval_s: float, read_s: float) -> None:
    time.sleep(max(interval_s, WATCH_PAUSE_FACTOR * read_s))


# Card numbers a buyer types into Stripe.js (docs.stripe.com/testing): each becomes a single-use PaymentMethod.
SUCCEEDING_NUMBERS = ["4242424242424242"]
DECLINING_NUMBERS = ["4000000000000002", "4000000000009995"]  # generic decline, insufficient funds
# Stripe's reusable test tokens, kept for a small share of checkouts (as a server-side integration sends them).
SUCCEEDING_TOKENS = ["pm_card_visa"]
DECLINING_TOKENS = ["pm_card_chargeDeclined"]
# Slower methods (issue 17), for an `async_rate` share of the one-currency checkouts: a card that needs a 3-D Secure
# challenge (the buyer completes it, fails it or walks away), or a bank debit from Stripe's test accounts (the
# bank answers days later: succeeded, or failed with the account's code).
THREEDS_TOKEN = "pm_card_threeDSecure2Required"
BUYER_ACTIONS = (("complete", 0.6), ("fail", 0.2), ("abandon", 0.2))
DEBIT_ACCOUNTS = {"sepa_debit": ("AT611904300234573201", "AT861904300235473202"),  # succeeds, fails
                  "us_bank_account": ("000123456789", "000222222227")}
DEBIT_OF_CURRENCY = {"EUR": "sepa_debit", "USD": "us_bank_account"}
DEBIT_FAIL_RATE = 0.2
MANDATE = {"customer_acceptance": {"type": "online",
                                   "online": {"ip_address": "198.51.100.20", "user_agent": "Mozilla/5.0 (chaos)"}}}
# The currencies of a checkout, by weight: mostly one, some two or three. JPY has no decimals.
CURRENCY_MIXES = [("USD",)] * 8 + [("EUR",)] * 4 + [("JPY",)] * 2 + [("USD", "EUR")] * 3 + [("EUR", "JPY")] \
    + [("USD", "JPY")] + [("USD", "EUR", "JPY")] * 2
# Stripe's minimum charge, in minor units, per currency total (docs.stripe.com/currencies#minimum-and-maximum).
MINIMUM_CHARGE_MINOR = {"USD": 50, "EUR": 50, "JPY": 50}
MAX_ORDERS_PER_CHECKOUT = 5
MEAN_ORDERS_PER_CHECKOUT = 3.2  # what make_checkouts draws on average (a test pins it): sizes a run in orders
SMALL_SHARE_RATE = 0.15  # orders below the minimum themselves (the charge's total still reaches it)


@dataclass(frozen=True)
class Card:
    """The buyer's card: a reusable token sent as is, or a number turned into a single-use PaymentMethod."""

    succeeds: bool
    token: str = ""
    number: str = ""  # a card number, or a bank debit's IBAN or account number
    method: str = "card"  # card | sepa_debit | us_bank_account
    action: str = ""  # a 3-D Secure card: what the buyer does with the challenge (complete | fail | abandon)


@dataclass
class Workload:
    checkouts: list[dict[str, Any]]  # request bodies; `payment_method` is None until a card number is tokenized
    cards: dict[str, Card] = field(default_factory=dict)  # checkout_id -> the buyer's card

    @property
    def order_ids(self) -> list[str]:
        return [o["payment_order_id"] for c in self.checkouts for o in c["payment_orders"]]

    @property
    def charges(self) -> list[tuple[str, str]]:
        """(checkout_id, currency) of every charge the workload asks for, in placing order."""
        return [(c["checkout_id"], currency) for c in self.checkouts
                for currency in dict.fromkeys(o["currency"] for o in c["payment_orders"])]

    @property
    def card_succeeds(self) -> dict[str, bool]:
        return {checkout_id: card.succeeds for checkout_id, card in self.cards.items()}


def make_checkouts(count: int, seed: int = 1, decline_rate: float = 0.1, prefix: str = "chk",
                   sellers: int = 8, buyers: int = 20, single_use_rate: float = 0.0,
                   async_rate: float = 0.0) -> Workload:
    """`count` checkouts of 1-5 orders from distinct sellers, in one to three currencies (USD, EUR, JPY), each
    currency's total at least Stripe's minimum; the same for the same seed. A `single_use_rate` share of the
    buyers type a card number (placing then needs `PaymentMethods`), the others send a reusable test token. An
    `async_rate` share of the one-currency checkouts pays with a 3-D Secure card or a bank debit instead (drawn
    apart: the other draws, and so the workloads of earlier runs, do not change)."""
    rng = random.Random(seed)
    workload = Workload([])
    for n in range(count):
        checkout_id = f"{prefix}_{seed}_{n:06d}"
        card = _card(rng, decline_rate, single_use_rate)
        buyer = rng.randrange(buyers)
        orders = _orders(rng, checkout_id, sellers)
        checkout = {
            "buyer_info": {"buyer_id": f"buyer_{buyer:03d}", "name": f"Buyer {buyer}",
                           "email": f"buyer{buyer}@example.com"},
            "checkout_id": checkout_id,
            "credit_card_info": {"payment_method": card.token or None},
            "payment_orders": orders,
        }
        currencies = {o["currency"] for o in orders}
        slow = random.Random(f"{seed}:async:{n}")
        if async_rate and len(currencies) == 1 and slow.random() < async_rate:
            card, method = _slow_method(slow, currencies.pop())
            del checkout["credit_card_info"]
            checkout["payment_method"] = method
        workload.cards[checkout_id] = card
        workload.checkouts.append(checkout)
    return workload


def _slow_method(rng: random.Random, currency: str) -> tuple[Card, dict[str, Any]]:
    """A 3-D Secure card (with what the buyer will do) or, in EUR or USD, half the time a bank debit."""
    debit = DEBIT_OF_CURRENCY.get(currency)
    if debit and rng.random() < 0.5:
        succeeds = rng.random() >= DEBIT_FAIL_RATE
        account = DEBIT_ACCOUNTS[debit][0 if succeeds else 1]
        return (Card(succeeds, number=account, method=debit),
                {"type": debit, "token": None, "mandate_data": MANDATE})
    action = rng.choices([a for a, _ in BUYER_ACTIONS], weights=[w for _, w in BUYER_ACTIONS])[0]
    return (Card(action == "complete", token=THREEDS_TOKEN, action=action),
            {"type": "card", "token": THREEDS_TOKEN})


def token_of(checkout: dict[str, Any]) -> str | None:
    """The PaymentMethod the checkout names, in whichever field it uses; None until one is made."""
    if "payment_method" in checkout:
        return checkout["payment_method"].get("token")
    return checkout["credit_card_info"].get("payment_method")


def _card(rng: random.Random, decline_rate: float, single_use_rate: float) -> Card:
    succeeds = rng.random() >= decline_rate
    if rng.random() < single_use_rate:
        return Card(succeeds, number=rng.choice(SUCCEEDING_NUMBERS if succeeds else DECLINING_NUMBERS))
    return Card(succeeds, token=rng.choice(SUCCEEDING_TOKENS if succeeds else DECLINING_TOKENS))


def _orders(rng: random.Random, checkout_id: str, sellers: int) -> list[dict[str, Any]]:
    currencies = rng.choice(CURRENCY_MIXES)
    size = rng.randint(len(currencies), MAX_ORDERS_PER_CHECKOUT)
    chosen = [currencies[k] if k < len(currencies) else rng.choice(currencies) for k in range(size)]
    minors = [rng.randint(10, 49) if rng.random() < SMALL_SHARE_RATE else rng.randint(50, 50_000) for _ in chosen]
    for currency in currencies:  # the last order of a currency tops its total up to Stripe's minimum
        last = max(k for k, c in enumerate(chosen) if c == currency)
        total = sum(m for m, c in zip(minors, chosen, strict=True) if c == currency)
        minors[last] += max(0, MINIMUM_CHARGE_MINOR[currency] - total)
    drawn = rng.sample(range(sellers), size)
    return [{"seller_account": f"seller_{seller:02d}", "amount": Money(minor, currency).to_major(),
             "currency": currency, "payment_order_id": f"{checkout_id}_{k}"}
            for k, (seller, minor, currency) in enumerate(zip(drawn, minors, chosen, strict=True))]


class PaymentMethodRefused(Exception):
    """The PSP refused the card's details (a 4xx from `POST /v1/payment_methods`)."""

    def __init__(self, status: int, body: Any):
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


class PaymentMethods:
    """What Stripe.js does in the buyer's browser: the card's details, form-encoded with the publishable key, to
    `POST /v1/payment_methods`; the answer's `pm_...` id is a PaymentMethod usable for one PaymentIntent."""

    def __init__(self, psp_url: str, publishable_key: str = "pk_test_storefront", timeout_s: float = 10.0,
                 attempts: int = 4):
        self.url = f"{psp_url.rstrip('/')}/v1/payment_methods"
        self.key, self.timeout_s, self.attempts = publishable_key, timeout_s, attempts

    def create(self, number: str) -> str:
        return self._create({"type": "card", "card[number]": number, "card[exp_month]": "12",
                             "card[exp_year]": "2030", "card[cvc]": "123"})

    def create_bank_account(self, method: str, number: str) -> str:
        """A bank debit's PaymentMethod: the IBAN (sepa_debit) or the US account (us_bank_account, routing
        110000000), with the holder's name, as Stripe.js sends them."""
        fields = ({"sepa_debit[iban]": number} if method == "sepa_debit" else
                  {"us_bank_account[routing_number]": "110000000", "us_bank_account[account_number]": number,
                   "us_bank_account[account_holder_type]": "individual"})
        return self._create({"type": method, **fields, "billing_details[name]": "Chaos Buyer",
                             "billing_details[email]": "buyer@example.com"})

    def _create(self, fields: dict[str, str]) -> str:
        form = urlencode({**fields, "key": self.key}).encode()
        for attempt in range(self.attempts):
            status, body = self._post(form)
            if status == 200 and str(body.get("id", "")).startswith("pm_"):
                return str(body["id"])
            if 400 <= status < 500 and status != 429:
                raise PaymentMethodRefused(status, body)
            if attempt < self.attempts - 1:  # a lost or failed answer: a new PaymentMethod, the old one unused
                time.sleep(0.05 * 2**attempt)
        raise PaymentMethodRefused(status, body)

    def _post(self, form: bytes) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(self.url, data=form, method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as error:
            try:
                return error.code, json.loads(error.read() or b"{}")
            except ValueError:
                return error.code, {}
        except (OSError, ValueError):
            return 0, {}


def with_payment_method(checkout: dict[str, Any], card: Card | None,
                        payment_methods: PaymentMethods | None) -> dict[str, Any]:
    """The body to post: a card number or bank account is tokenized once here, and every retry and replay reuses
    the body."""
    if token_of(checkout):
        return checkout
    if card is None or not card.number:
        raise ValueError(f"{checkout['checkout_id']}: no payment method and no card number to tokenize")
    if payment_methods is None:
        raise ValueError(f"{checkout['checkout_id']}: a card number needs the PSP: place_all(..., "
                         "payment_methods=PaymentMethods(psp_url))")
    if card.method != "card":
        token = payment_methods.create_bank_account(card.method, card.number)
        return {**checkout, "payment_method": {**checkout["payment_method"], "token": token}}
    return {**checkout, "credit_card_info": {"payment_method": payment_methods.create(card.number)}}


class ApiClient:
    """Minimal keep-alive HTTP client for the payments API (one connection per thread)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float = 30.0):
        parsed = urlparse(base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return conn

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
        payload = None if body is None else (body if isinstance(body, str) else json.dumps(body))
        headers = {**self._auth, **({"Content-Type": "application/json"} if payload is not None else {}),
                   **(headers or {})}
        for attempt in range(2):
            try:
                conn = self._conn()
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                answer_headers = {k.lower(): v for k, v in response.getheaders()}
                return response.status, (json.loads(raw) if raw else {}), answer_headers
            except (ConnectionError, http.client.HTTPException):
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def post_checkout(self, checkout: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.request("POST", "/v1/payments", checkout)

    def get_order(self, payment_order_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.request("GET", f"/v1/payments/{payment_order_id}")

    def get_checkout(self, checkout_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.request("GET", f"/v1/checkouts/{checkout_id}")

    # -- pay-outs (issue 15) ----------------------------------------------------------------------------------

    def release(self, payment_order_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The storefront confirms delivery: 202 the first time, 200 with the same body after."""
        return self.request("POST", f"/v1/payments/{payment_order_id}/release")

    def put_seller(self, seller_account: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.request("PUT", f"/v1/sellers/{seller_account}", body)

    def get_seller(self, seller_account: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.request("GET", f"/v1/sellers/{seller_account}")

    def balance(self, seller_account: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.request("GET", f"/v1/sellers/{seller_account}/balance")

    def statement(self, seller_account: str, start: str, end: str, *, csv: bool = False) -> tuple[int, Any, str]:
        """The seller's movements from `start` to `end` (ISO times): JSON, or the CSV text."""
        path = f"/v1/sellers/{seller_account}/statement?{urlencode({'from': start, 'to': end})}"
        if not csv:
            status, body, _ = self.request("GET", path)
            return status, body, ""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path, headers={**self._auth, "Accept": "text/csv"})
            response = conn.getresponse()
            return response.status, None, response.read().decode()
        finally:
            conn.close()


# -- failover (issue 18): the storefront asks where a checkout's charges go before the buyer's card is tokenized ----


ROUTE_STALE = "payment_method_not_for_routed_psp"  # the API's 422 for a card tokenized at the PSP it does not route to
ADYEN_DECLINED_HOLDER = "DECLINED"  # the Adyen sandbox refuses a card of this holder (psp_sandbox/adyen/books.py)


RETURN_URL = "https://shop.example/checkout/return"  # the storefront's page Adyen's 3-D Secure redirect comes back to


def adyen_card(succeeds: bool) -> dict[str, str]:
    """What Adyen's Card Component hands the storefront (the Adyen sandbox's stand-in for its browser encryption):
    a card that is authorised, or refused by its holder's name."""
    from psp_sandbox.adyen.books import sandbox_encrypted

    return {"type": "scheme", "encryptedCardNumber": sandbox_encrypted("test_4111111111111111"),
            "encryptedExpiryMonth": sandbox_encrypted("test_03"), "encryptedExpiryYear": sandbox_encrypted("test_2030"),
            "encryptedSecurityCode": sandbox_encrypted("test_737"),
            "holderName": "Chaos Buyer" if succeeds else ADYEN_DECLINED_HOLDER}


def method_type(checkout: dict[str, Any]) -> str:
    return str(checkout["payment_method"]["type"]) if "payment_method" in checkout else "card"


@dataclass
class Router:
    """A storefront whose platform fails cards over from Stripe to Adyen (functions/shared/routing.py `failover`):
    before each checkout it asks `POST /v1/payment_routes` where the charges go, and pays with that PSP's payment
    method: a Stripe PaymentMethod as ever, or Adyen's encrypted card (card checkouts in one currency; a 3-D Secure
    card keeps its Stripe token: Adyen's shopper actions are not built). While Stripe cannot tokenize a card (its
    outage, before the breaker opened), the buyer tries again a second later, asking the route again. A checkout
    whose route went stale before it was posted (422 payment_method_not_for_routed_psp) asks again and is posted
    once more with the other PSP's card (`place_all`)."""

    api: ApiClient
    payment_methods: PaymentMethods
    wait_s: float = 600.0  # how long a buyer keeps trying while nothing can tokenize the card
    counts: dict[str, int] = field(default_factory=dict)
    routed: dict[str, str] = field(default_factory=dict)  # checkout_id -> the PSP whose method it was posted with
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    def route(self, checkout: dict[str, Any]) -> str:
        """The one PSP the route endpoint names for the whole checkout ("stripe" when it names none)."""
        body = {"payment_method_type": method_type(checkout),
                "payment_orders": [{k: o[k] for k in ("seller_account", "amount", "currency")}
                                   for o in checkout["payment_orders"]]}
        for attempt in range(8):
            try:
                status, answer, _ = self.api.request("POST", "/v1/payment_routes", body)
            except OSError:
                status, answer = 0, {}
            if status == 200:
                self._count("routes_asked")
                return str(answer.get("psp") or "stripe")
            if status and status < 500 and status != 429:
                raise PaymentMethodRefused(status, answer)
            time.sleep(min(0.05 * 2**attempt, 1.0))
        raise PaymentMethodRefused(status, answer)

    def prepare(self, checkout: dict[str, Any], card: Card | None, avoid: str = "") -> dict[str, Any]:
        """The body to post: the route asked, the card tokenized where it says (`avoid`: the PSP the API just
        refused for this checkout, whose route is asked again and, if it still names it, the other PSP's card)."""
        deadline = time.monotonic() + self.wait_s
        while True:
            psp = self.route(checkout)
            if avoid and psp == avoid:
                psp = "stripe" if avoid == "adyen" else "adyen"
            adyen_ok = (card is not None and card.method == "card" and not card.action
                        and method_type(checkout) == "card")
            if psp == "adyen" and adyen_ok:
                body = {k: v for k, v in checkout.items() if k not in ("credit_card_info", "payment_method")}
                body["payment_method"] = {"type": "card", "adyen": adyen_card(card.succeeds),  # type: ignore[union-attr]
                                          "return_url": RETURN_URL}
                self._count("paid_with_adyen_card")
                self.routed[checkout["checkout_id"]] = "adyen"
                return body
            try:
                body = with_payment_method(checkout, card, self.payment_methods)
            except PaymentMethodRefused as error:
                if error.status or time.monotonic() > deadline:
                    raise
                self._count("tokenize_retried_stripe_unreachable")  # Stripe.js failed: the buyer tries again
                time.sleep(1.0)
                continue
            self._count("paid_with_stripe_method")
            self.routed[checkout["checkout_id"]] = "stripe"
            return body
