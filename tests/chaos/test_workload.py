"""The chaos and demo storefront: seeded multi-seller, multi-currency checkouts, a single-use PaymentMethod per
checkout created as Stripe.js creates it, and replays that reuse the exact body (token included).

`test_payment_methods_against_the_sandbox` needs the sandbox's `POST /v1/payment_methods` (sandbox branch of issue
20): it is skipped until that is merged, and must pass after the merge.
"""

import json
import statistics
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import stripe

from functions.shared.money import Money
from verification.driver import place_all
from verification.storefront import (
    DECLINING_NUMBERS,
    DECLINING_TOKENS,
    MAX_ORDERS_PER_CHECKOUT,
    MEAN_ORDERS_PER_CHECKOUT,
    MINIMUM_CHARGE_MINOR,
    SUCCEEDING_NUMBERS,
    PaymentMethodRefused,
    PaymentMethods,
    make_checkouts,
)


def test_the_same_seed_makes_the_same_checkouts_and_cards():
    first, again = (make_checkouts(200, seed=5, single_use_rate=0.9) for _ in range(2))
    assert first.checkouts == again.checkouts and first.cards == again.cards
    assert make_checkouts(200, seed=6, single_use_rate=0.9).checkouts != first.checkouts


def test_checkouts_are_multi_seller_multi_currency_and_each_currency_reaches_stripes_minimum():
    workload = make_checkouts(1000, seed=3, single_use_rate=0.9)
    sizes, currencies_per_checkout, small_orders = [], Counter(), 0
    for checkout in workload.checkouts:
        orders = checkout["payment_orders"]
        sizes.append(len(orders))
        assert 1 <= len(orders) <= MAX_ORDERS_PER_CHECKOUT
        assert len({o["seller_account"] for o in orders}) == len(orders)  # one order per seller
        totals = Counter()
        for order in orders:
            money = Money.from_major(order["amount"], order["currency"])  # as the API parses it
            totals[money.currency] += money.minor
            small_orders += money.minor < MINIMUM_CHARGE_MINOR[money.currency]
        assert set(totals) <= {"USD", "EUR", "JPY"}
        assert all(total >= MINIMUM_CHARGE_MINOR[currency] for currency, total in totals.items()), totals
        currencies_per_checkout[len(totals)] += 1
    assert abs(statistics.mean(sizes) - MEAN_ORDERS_PER_CHECKOUT) < 0.15
    assert min(sizes) == 1 and max(sizes) == MAX_ORDERS_PER_CHECKOUT
    assert currencies_per_checkout[2] > 150 and currencies_per_checkout[3] > 50  # ~24% and ~10%
    assert small_orders > 100  # parts below the minimum, topped up by the checkout's other orders
    jpy = [o["amount"] for c in workload.checkouts for o in c["payment_orders"] if o["currency"] == "JPY"]
    assert jpy and all("." not in amount for amount in jpy)


def test_the_charges_of_a_workload_are_one_per_checkout_and_currency():
    workload = make_checkouts(50, seed=4)
    expected = {(c["checkout_id"], o["currency"]) for c in workload.checkouts for o in c["payment_orders"]}
    assert sorted(workload.charges) == sorted(expected) and len(workload.charges) == len(expected)


def test_most_buyers_type_a_card_number_and_some_send_a_reusable_token():
    workload = make_checkouts(1000, seed=8, decline_rate=0.1, single_use_rate=0.9)
    cards = list(workload.cards.values())
    numbers = [c for c in cards if c.number]
    assert 850 < len(numbers) < 950 and all(not c.token for c in numbers)
    assert {c.token for c in cards if not c.number} == {"pm_card_visa", *DECLINING_TOKENS}
    assert 60 < sum(not c.succeeds for c in cards) < 140
    assert all((c.number in SUCCEEDING_NUMBERS) == c.succeeds for c in numbers)
    assert {c.number for c in numbers if not c.succeeds} == set(DECLINING_NUMBERS)
    for checkout in workload.checkouts:  # only a token goes into the body before placing
        card = workload.cards[checkout["checkout_id"]]
        assert checkout["credit_card_info"]["payment_method"] == (card.token or None)
    assert make_checkouts(100, seed=8).cards and all(c.token for c in make_checkouts(100, seed=8).cards.values())


# -- placing: one fresh token per checkout, reused by every retry and replay ------------------------------------


class FakeIssuer:
    """Stands in for the sandbox's POST /v1/payment_methods: a new id per call."""

    def __init__(self):
        self.created = []
        self._lock = threading.Lock()

    def create(self, number):
        with self._lock:
            self.created.append(number)
            return f"pm_{len(self.created):04d}"


class FakeApi:
    """The payments API as far as place_all needs it: the first POST of a checkout is stored, a repeat with the
    same body is replayed, one with another body is a 409."""

    def __init__(self):
        self.posts, self.stored = [], {}
        self._lock = threading.Lock()

    def post_checkout(self, body):
        with self._lock:
            self.posts.append(json.loads(json.dumps(body)))
            first = self.stored.setdefault(body["checkout_id"], body)
        if first != body:
            return 409, {"code": "checkout_conflict"}, {}
        answer = {"checkout_id": body["checkout_id"]}
        return 202, answer, ({"idempotent-replayed": "true"} if len(self.posts_of(body)) > 1 else {})

    def posts_of(self, body):
        return [p for p in self.posts if p == body]

    def get_order(self, order_id):
        checkout_id = order_id.rsplit("_", 1)[0]
        order = next(o for o in self.stored[checkout_id]["payment_orders"] if o["payment_order_id"] == order_id)
        return 200, {**order, "payment_order_status": "NOT_STARTED"}, {}


def test_each_checkout_with_a_card_number_gets_one_fresh_payment_method_and_its_replays_reuse_it():
    workload = make_checkouts(80, seed=9, single_use_rate=0.8)
    api, issuer = FakeApi(), FakeIssuer()
    record = place_all(api, workload, seed=9, replay_rate=0.5, conflict_rate=0.3, threads=4,
                       payment_methods=issuer)
    numbered = [c for c in workload.checkouts if workload.cards[c["checkout_id"]].number]
    assert len(issuer.created) == len(numbered) == len(record.payment_methods)  # one token per checkout
    assert len(set(record.payment_methods.values())) == len(numbered)  # never shared
    tokens_posted = {}
    for post in api.posts:
        tokens_posted.setdefault(post["checkout_id"], set()).add(post["credit_card_info"]["payment_method"])
    assert all(len(tokens) == 1 for tokens in tokens_posted.values())  # retries, replays, conflicts: one token
    for checkout in workload.checkouts:
        sent = tokens_posted[checkout["checkout_id"]].pop()
        assert sent == (record.payment_methods.get(checkout["checkout_id"]) or checkout["credit_card_info"][
            "payment_method"])
        assert checkout["credit_card_info"]["payment_method"] != sent or not workload.cards[
            checkout["checkout_id"]].number  # the workload itself is left as generated
    same = [r for r in record.replays if r["kind"] == "same"]
    assert same and all(r["second_body"] == r["first_body"] and r["replayed_header"] for r in same)
    assert all(r["second_status"] == 409 for r in record.replays if r["kind"] == "conflict")
    assert record.rejected == [] and len(record.accepted_order_ids) == len(workload.order_ids)


def test_placing_card_numbers_without_a_psp_to_tokenize_them_fails_before_any_post():
    api = FakeApi()
    with pytest.raises(ValueError, match="payment_methods"):
        place_all(api, make_checkouts(10, seed=1, single_use_rate=1.0))
    assert api.posts == []


# -- the Stripe.js request itself ------------------------------------------------------------------------------


class _FakePsp(BaseHTTPRequestHandler):
    """A tiny `POST /v1/payment_methods`: answers 503 once, refuses one number with 402, else a new pm_ id."""

    forms: list = []
    fail_first = True

    def do_POST(self):  # noqa: N802 - the stdlib's name
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        type(self).forms.append({k: v[0] for k, v in form.items()})
        if type(self).fail_first:
            type(self).fail_first = False
            return self._answer(503, {"error": {"type": "api_error"}})
        if form["card[number]"][0] == "4000000000000069":
            return self._answer(402, {"error": {"type": "card_error", "code": "expired_card"}})
        return self._answer(200, {"id": f"pm_fake{len(type(self).forms)}", "object": "payment_method"})

    def _answer(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_psp():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakePsp)
    _FakePsp.forms, _FakePsp.fail_first = [], True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_payment_method_is_created_as_stripe_js_sends_it_and_a_failed_answer_is_asked_again(fake_psp):
    methods = PaymentMethods(fake_psp)
    assert methods.create("4242424242424242") == "pm_fake2"
    assert _FakePsp.forms[-1] == {"type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12",
                                  "card[exp_year]": "2030", "card[cvc]": "123", "key": "pk_test_storefront"}
    assert len(_FakePsp.forms) == 2  # the 503, then the PaymentMethod
    with pytest.raises(PaymentMethodRefused) as refused:
        methods.create("4000000000000069")
    assert refused.value.status == 402


# -- against the real sandbox --------------------------------------------------------------------------------


def test_payment_methods_against_the_sandbox(sandbox):

    token = PaymentMethods(sandbox.url).create(SUCCEEDING_NUMBERS[0])
    client = stripe.StripeClient("sk_test_chaos", base_addresses={"api": sandbox.url})
    charge = {"amount": 1250, "currency": "usd", "payment_method": token, "confirm": True,
              "payment_method_types": ["card"], "metadata": {"checkout_id": "chk_1", "charge_key": "chk_1#USD"}}
    first = client.v1.payment_intents.create(params=charge, options={"idempotency_key": "charge:chk_1:USD"})
    assert first.status == "succeeded"
    replayed = client.v1.payment_intents.create(params=charge, options={"idempotency_key": "charge:chk_1:USD"})
    assert replayed.id == first.id  # the same key replays the first use
    with pytest.raises(stripe.InvalidRequestError):  # a second PaymentIntent with the token: refused, as Stripe
        client.v1.payment_intents.create(params={**charge, "metadata": {"checkout_id": "chk_1",
                                                                        "charge_key": "chk_1#EUR"},
                                                 "currency": "eur"}, options={"idempotency_key": "charge:chk_1:EUR"})
    declined = PaymentMethods(sandbox.url).create(DECLINING_NUMBERS[1])
    with pytest.raises(stripe.CardError) as refused:
        client.v1.payment_intents.create(params={**charge, "payment_method": declined})
    assert refused.value.json_body["error"]["decline_code"] == "insufficient_funds"
