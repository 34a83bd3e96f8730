"""A rule routing EUR cards to Adyen, end to end through the API (its HTTP handler), the workflow's steps (Charge,
CreditWallet, RecordLedger, finalize), moto and both sandboxes: the order records psp=adyen and the rule, the charge
is one payment at the Adyen sandbox and nothing at Stripe's, declines end FAILED, a lost answer is retried under the
same key and charged once. And the API's checks follow the routed PSP: its units, and whose card it is."""

import base64
import json

import boto3
import pytest

from functions.executor import handler as executor
from functions.payment import api, service
from functions.payment import refunds as refunds_api
from functions.payment.refunds import RefundNotWired
from functions.payment.schemas import RefundRequest
from functions.shared import psp
from functions.shared.config import reload_settings, settings
from functions.shared.errors import PspOutcomeUnknown, PspTransientError
from functions.shared.psp_adyen import AdyenPsp
from functions.shared.tables import LedgerTable, PaymentTables, RefundsTable, WalletTable
from psp_sandbox.adyen.books import sandbox_encrypted
from tests.integration.test_executor_adyen import adyen  # noqa: F401 - the fixture
from tests.integration.test_executor_checkout import begin, run_charge
from tests.integration.test_tenancy import call
from tests.support.events import FakeContext, http_event
from verification.storefront import RETURN_URL

EUR_CARDS = {"rules": [{"name": "eur-cards", "psp": "adyen", "currencies": ["EUR"], "methods": ["card"]}]}
TWO_SELLERS_EUR = (("seller_a", "12.34", "EUR"), ("seller_b", "5.00", "EUR"))


@pytest.fixture
def routed(adyen, monkeypatch):  # noqa: F811 - the fixture imported above
    monkeypatch.setenv("PSP_ROUTING", json.dumps(EUR_CARDS))
    reload_settings()
    psp.reset_client()
    return adyen


def adyen_card(holder="J Smith"):
    """What Adyen's Card Component hands the storefront: every card field encrypted in the browser (here the
    sandbox's stand-in for Adyen's encryption; our API refuses a card number in clear)."""
    return {"type": "scheme", "encryptedCardNumber": sandbox_encrypted("test_4111111111111111"),
            "encryptedExpiryMonth": sandbox_encrypted("test_03"), "encryptedExpiryYear": sandbox_encrypted("test_2030"),
            "encryptedSecurityCode": sandbox_encrypted("test_737"), "holderName": holder}


def with_return_url(method):
    """An Adyen card's method with the storefront's return_url (return_url=None: without it)."""
    if "adyen" not in method:
        return method
    return {k: v for k, v in ({"return_url": RETURN_URL} | method).items() if v is not None}


def post(checkout_id, orders=TWO_SELLERS_EUR, **method):
    body = {"buyer_info": {"buyer_id": "b", "country": "NL"}, "checkout_id": checkout_id,
            "payment_method": {"type": "card", **with_return_url(method or {"adyen": adyen_card()})},
            "payment_orders": [{"seller_account": seller, "amount": amount, "currency": currency,
                                "payment_order_id": f"{checkout_id}_{n}"}
                               for n, (seller, amount, currency) in enumerate(orders)]}
    answer = api.handler(http_event("POST", "/v1/payments", body), FakeContext())
    return answer["statusCode"], json.loads(answer["body"])


def orders_of(checkout_id, count=2):
    tables = PaymentTables.from_settings()
    return [tables.get_order(f"{checkout_id}_{n}") for n in range(count)]


def adyen_payments(server, checkout_id):
    return [p for p in server.sandbox.payments() if p["merchantReference"].startswith(f"{checkout_id}#")]


def test_a_eur_card_checkout_is_charged_once_at_adyen_and_credited(routed, sandbox):
    status, answer = post("chk_eu")
    assert status == 202, answer
    orders = orders_of("chk_eu")
    assert [(o["psp"], o["psp_route"]) for o in orders] == [("adyen", "eur-cards")] * 2
    charge = PaymentTables.from_settings().get_charge("chk_eu#EUR")
    assert (charge["psp"], charge["psp_route"]) == ("adyen", "eur-cards")
    # the encrypted card (its security code among it) only on the charge, passed on as the browser made it; the
    # checkout, the orders and the charge's payment_method name it by a fingerprint
    assert json.loads(charge["adyen_payment_method"]) == adyen_card()
    event = PaymentTables.from_settings().get_checkout("chk_eu")
    fingerprints = {charge["payment_method"], event["payment_method"], *(o["payment_method"] for o in orders)}
    assert len(fingerprints) == 1 and fingerprints.pop().startswith("adyen_card:")
    assert all("adyen_payment_method" not in item for item in (event, *orders))

    assert run_charge(begin("chk_eu", "EUR"))["charge_status"] == "SUCCESS"
    assert "adyen_payment_method" not in PaymentTables.from_settings().get_charge("chk_eu#EUR")  # final: gone

    [payment] = adyen_payments(routed, "chk_eu")
    assert payment["amount"] == {"currency": "EUR", "value": 1734} and payment["resultCode"] == "Authorised"
    assert sandbox.charges() == []  # nothing at Stripe
    assert [o["payment_order_status"] for o in orders_of("chk_eu")] == ["SUCCESS", "SUCCESS"]
    assert all(o["psp_reference"] == payment["pspReference"] for o in orders_of("chk_eu"))
    wallet = WalletTable.from_settings()
    assert wallet.balances("seller_a")["EUR"]["pending_minor"] == 1234
    assert wallet.balances("seller_b")["EUR"]["pending_minor"] == 500
    accounts = {row["transaction_id"]: {e["account"]: e["amount_minor"] for e in row["entries"]}
                for row in LedgerTable.from_settings().scan()}
    assert accounts["payin#chk_eu_0"]["psp_receivable:adyen"] == 1234
    assert accounts["payin#chk_eu_1"]["psp_receivable:adyen"] == 500
    assert [o.payment_order_status for o in service.get_checkout("chk_eu").payment_orders] == ["SUCCESS"] * 2


def test_other_currencies_stay_at_stripe_as_before(routed, sandbox):
    status, _ = post("chk_us", orders=(("seller_a", "12.34", "USD"),), token="pm_card_visa")
    assert status == 202
    [order] = orders_of("chk_us", 1)
    assert order["psp"] == "stripe" and "psp_route" not in order
    assert run_charge(begin("chk_us", "USD"))["charge_status"] == "SUCCESS"
    assert len(sandbox.charges()) == 1 and routed.sandbox.payments() == []


def test_a_decline_at_adyen_fails_every_order_with_its_reason(routed):
    status, _ = post("chk_no", adyen=adyen_card("DECLINED"))
    assert status == 202
    assert run_charge(begin("chk_no", "EUR"))["charge_status"] == "FAILED"
    orders = orders_of("chk_no")
    assert [o["payment_order_status"] for o in orders] == ["FAILED", "FAILED"]
    assert {o.get("failure_code") for o in orders} == {"refused"}
    assert {o.get("failure_reason") for o in orders} == {"Refused"}
    assert [p["resultCode"] for p in adyen_payments(routed, "chk_no")] == ["Refused"]


@pytest.mark.parametrize("kind", ["lost_response", "http_503"])
def test_a_lost_answer_is_retried_with_the_same_key_and_charged_once(routed, kind):
    assert post("chk_lost")[0] == 202
    work = begin("chk_lost", "EUR")
    routed.sandbox.faults.push(kind, match={"path": "/v71/payments"})
    with pytest.raises(PspTransientError):  # the workflow's Retry runs the Charge step again with the same input
        run_charge(work)
    assert run_charge(work)["charge_status"] == "SUCCESS"
    [payment] = adyen_payments(routed, "chk_lost")
    assert payment["resultCode"] == "Authorised"
    assert [o["payment_order_status"] for o in orders_of("chk_lost")] == ["SUCCESS", "SUCCESS"]
    assert PaymentTables.from_settings().get_charge("chk_lost#EUR")["psp_calls"] == 2


def test_the_amount_check_follows_the_routed_psp(routed):
    # 0.40 EUR is below Stripe's minimum (0.50): Adyen, which EUR cards are routed to, takes it
    status, answer = post("chk_small", orders=(("seller_a", "0.40", "EUR"),))
    assert status == 202, answer
    assert run_charge(begin("chk_small", "EUR"))["charge_status"] == "SUCCESS"
    assert adyen_payments(routed, "chk_small")[0]["amount"] == {"currency": "EUR", "value": 40}
    # the same amount in USD still goes to Stripe, and Stripe's minimum refuses it as before
    status, answer = post("chk_small_us", orders=(("seller_a", "0.40", "USD"),), token="pm_card_visa")
    assert status == 422 and answer["error"]["code"] == "amount_below_psp_minimum"


def test_adyens_own_units_decide_for_a_currency_stripe_cannot_charge(routed, monkeypatch):
    rules = {"rules": [{"name": "kwd-cards", "psp": "adyen", "currencies": ["KWD", "LYD"], "methods": ["card"]}]}
    monkeypatch.setenv("PSP_ROUTING", json.dumps(rules))
    reload_settings()
    # Stripe refuses 1.234 KWD (last digit must be 0) and LYD; Adyen takes both in 3 decimals
    assert post("chk_kwd", orders=(("seller_a", "1.234", "KWD"),))[0] == 202
    assert post("chk_lyd", orders=(("seller_a", "10.000", "LYD"),))[0] == 202
    assert run_charge(begin("chk_kwd", "KWD"))["charge_status"] == "SUCCESS"
    assert adyen_payments(routed, "chk_kwd")[0]["amount"] == {"currency": "KWD", "value": 1234}


@pytest.mark.parametrize(("orders", "method", "code"), [
    (TWO_SELLERS_EUR, {"token": "pm_card_visa"}, "payment_method_not_for_routed_psp"),  # a Stripe token for Adyen
    ((("seller_a", "12.34", "USD"),), {"adyen": adyen_card()}, "payment_method_not_for_routed_psp"),
    ((("seller_a", "12.34", "EUR"), ("seller_b", "5.00", "USD")), {"adyen": adyen_card()},
     "payment_method_not_for_routed_psp"),
    ((("seller_a", "12.34", "EUR"),), {"adyen": adyen_card(), "token": "pm_card_visa"}, "payment_method_ambiguous"),
    ((("seller_a", "12.34", "EUR"),), {"adyen": adyen_card(), "wallet": "apple_pay"}, "payment_method_ambiguous"),
    # Adyen may send the buyer to the issuer's page: where they come back is the storefront's to say, in https
    ((("seller_a", "12.34", "EUR"),), {"adyen": adyen_card(), "return_url": None}, "return_url_missing"),
    ((("seller_a", "12.34", "EUR"),), {"adyen": adyen_card(), "return_url": "http://shop.example/r"},
     "invalid_format"),
])
def test_a_card_is_refused_when_its_psp_is_not_the_routed_one(routed, orders, method, code):
    status, answer = post("chk_bad", orders=orders, **method)
    assert status == 422 and answer["error"]["code"] == code, answer
    assert PaymentTables.from_settings().get_charge("chk_bad#EUR") is None


def test_an_adyen_card_paying_two_currencies_routed_to_adyen_is_refused(routed, monkeypatch):
    rules = {"rules": [{"name": "eu", "psp": "adyen", "currencies": ["EUR", "GBP"], "methods": ["card"]}]}
    monkeypatch.setenv("PSP_ROUTING", json.dumps(rules))
    reload_settings()
    status, answer = post("chk_two", orders=(("seller_a", "12.34", "EUR"), ("seller_b", "5.00", "GBP")))
    assert status == 422 and answer["error"]["code"] == "payment_method_single_currency"


def test_a_card_number_in_clear_is_refused_before_anything(routed):
    clear = {**adyen_card(), "encryptedCardNumber": "test_4111111111111111"}
    status, answer = post("chk_pan", adyen=clear)
    assert status == 422 and answer["error"]["code"] == "card_number_not_allowed"
    assert PaymentTables.from_settings().get_charge("chk_pan#EUR") is None


def test_without_a_rule_an_adyen_card_is_refused_and_stripe_is_as_before(adyen, sandbox):  # noqa: F811
    status, answer = post("chk_default")
    assert status == 422 and answer["error"]["code"] == "payment_method_not_for_routed_psp"
    assert post("chk_stripe", token="pm_card_visa")[0] == 202
    assert [o["psp"] for o in orders_of("chk_stripe")] == ["stripe", "stripe"]


def test_the_sandbox_stand_in_for_encryption_carries_no_card_number():
    value = sandbox_encrypted("test_4111111111111111")
    assert "4111" not in value and base64.b64decode(value.split("$", 1)[1]) == b"test_4111111111111111"


def test_a_refund_of_an_order_charged_at_an_unwired_psp_is_refused_before_anything_is_held(routed):
    """Adyen's refunds are wired (tests/integration/test_adyen_refunds.py); an order recording a PSP no
    configuration made is still refused at the API, before anything is reserved."""
    assert post("chk_rf")[0] == 202
    assert run_charge(begin("chk_rf", "EUR"))["charge_status"] == "SUCCESS"
    orders = boto3.resource("dynamodb", region_name="us-east-1").Table(settings().payment_orders_table)
    orders.update_item(Key={"payment_order_id": "chk_rf_0"}, UpdateExpression="SET psp = :p",
                       ExpressionAttributeValues={":p": "elsewhere"})
    with pytest.raises(RefundNotWired):
        refunds_api.create_refund("chk_rf_0", RefundRequest.model_validate({"refund_id": "rf_a", "reason": "x"}))
    order = PaymentTables.from_settings().get_order("chk_rf_0")
    assert int(order.get("refunded_minor") or 0) == 0 and RefundsTable.from_settings().get("rf_a") is None
    assert [p["refunded"] for p in adyen_payments(routed, "chk_rf")] == [0]


def test_a_sellers_rule_routes_a_tenants_checkout_alike_in_the_route_endpoint_validation_and_placing(routed,
                                                                                                   monkeypatch):
    # Given a rule naming one of shop_a's sellers by its internal id (shop_a~seller_nl)
    rules = {"rules": [{"name": "nl-seller", "psp": "adyen", "currencies": ["USD"], "methods": ["card"],
                        "sellers": ["shop_a~seller_nl"]}]}
    monkeypatch.setenv("PSP_ROUTING", json.dumps(rules))
    reload_settings()
    orders = [{"seller_account": "seller_nl", "amount": "20.00", "currency": "USD", "payment_order_id": "po_t1"}]
    route = {"payment_method_type": "card", "payment_orders": [{k: o[k] for k in ("seller_account", "amount",
                                                                                   "currency")} for o in orders]}
    body = {"buyer_info": {"buyer_id": "b"}, "checkout_id": "chk_tenant", "payment_orders": orders,
            "payment_method": {"type": "card", "adyen": adyen_card(), "return_url": RETURN_URL}}
    # When shop_a asks where to tokenize and then pays there, the route and the POST agree: Adyen
    status, answer, _ = call("shop_a", "POST", "/v1/payment_routes", route)
    assert (status, answer["psp"]) == (200, "adyen"), answer
    status, answer, _ = call("shop_a", "POST", "/v1/payments", body)
    assert status == 202, answer
    assert PaymentTables.from_settings().get_charge("shop_a~chk_tenant#USD")["psp"] == "adyen"
    # and another tenant's seller of the same name is not that seller: its checkout stays at Stripe
    status, answer, _ = call("shop_b", "POST", "/v1/payment_routes", route)
    assert (status, answer["psp"]) == (200, "stripe"), answer
    status, answer, _ = call("shop_b", "POST", "/v1/payments", body | {"checkout_id": "chk_other"})
    assert (status, answer["error"]["code"]) == (422, "payment_method_not_for_routed_psp")


def test_a_charge_first_sent_under_one_adyen_account_is_never_sent_under_another(routed, monkeypatch):
    # Given a charge whose first call reached Adyen and whose answer was lost
    assert post("chk_acct")[0] == 202
    work = begin("chk_acct", "EUR")
    routed.sandbox.faults.push("lost_response", match={"path": "/v71/payments"})
    with pytest.raises(PspTransientError):
        run_charge(work)
    assert PaymentTables.from_settings().get_charge("chk_acct#EUR")["psp_account"] == "test||MarketPayECOM"
    # When an operator changes the merchant account before its retry (its keys would be another account's)
    monkeypatch.setenv("ADYEN_MERCHANT_ACCOUNT", "OtherECOM")
    reload_settings()
    psp.reset_client()
    sent = []
    real = AdyenPsp._call
    monkeypatch.setattr(AdyenPsp, "_call", staticmethod(lambda send: (sent.append(1), real(send))[1]))
    # Then nothing is sent: the outcome is unknown, for a human, and Adyen holds the one payment
    with pytest.raises(PspOutcomeUnknown, match="first sent under adyen account test\\|\\|MarketPayECOM"):
        executor.execute(work)
    assert sent == []
    assert len(adyen_payments(routed, "chk_acct")) == 1
    # and under the account it was first sent with, the retry finds that payment
    monkeypatch.setenv("ADYEN_MERCHANT_ACCOUNT", "MarketPayECOM")
    reload_settings()
    psp.reset_client()
    assert run_charge(work)["charge_status"] == "SUCCESS"
    assert len(adyen_payments(routed, "chk_acct")) == 1
