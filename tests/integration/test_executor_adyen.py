"""The executor's charge step for a charge routed to Adyen, against the Adyen sandbox (Adyen's own library) and moto:
one payment per charge, its look-up is a replay of the same key, declines end FAILED, unclear answers are retried
and charge once, and none of Stripe's steps run (the Stripe sandbox, also running, sees nothing)."""

import json
from datetime import timedelta

import boto3
import pytest

from functions.executor import handler as executor
from functions.payment.service import charge_item
from functions.shared import clock, psp
from functions.shared.config import reload_settings
from functions.shared.errors import PspOutcomeUnknown, PspPermanentError, PspTransientError
from functions.shared.models import ChargeWork
from functions.shared.psp_adyen import AdyenPsp, wire_key
from functions.shared.tables import PaymentTables
from psp_sandbox.adyen import start_adyen_sandbox
from psp_sandbox.adyen.server import API_KEY, HMAC_KEY, MERCHANT_ACCOUNT


def adyen_card(holder: str = "J Smith") -> str:
    """Adyen's Drop-in `paymentMethod` with the test platform's encrypted-field values, as the API stores it."""
    return json.dumps({"type": "scheme", "encryptedCardNumber": "test_4111111111111111",
                       "encryptedExpiryMonth": "test_03", "encryptedExpiryYear": "test_2030",
                       "encryptedSecurityCode": "test_737", "holderName": holder},
                      sort_keys=True, separators=(",", ":"))


@pytest.fixture
def adyen(sandbox, monkeypatch):
    """The Adyen sandbox beside the Stripe one (`sandbox`), and the settings the functions read to reach it."""
    server = start_adyen_sandbox()
    for name, value in {"ADYEN_API_KEY": API_KEY, "ADYEN_MERCHANT_ACCOUNT": MERCHANT_ACCOUNT,
                        "ADYEN_HMAC_KEY": HMAC_KEY, "ADYEN_CHECKOUT_BASE": server.checkout_base}.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    psp.reset_client()
    yield server
    server.stop()
    psp.reset_client()


def stored(checkout_id="chk_a1", minor=2500, currency="EUR", card=None, **fields) -> ChargeWork:
    """An Adyen-routed charge as the API stores it, begun by the starter (attempt 1)."""
    orders = [{"payment_order_id": f"{checkout_id}_0", "seller_account": "seller_a", "amount_minor": minor,
               "psp": "adyen"}]
    now = clock.iso()
    card = card or adyen_card()
    item = {**charge_item(checkout_id, currency, orders, "adyen_card:fingerprint", now, now), "psp_route": "eur-cards",
            "adyen_payment_method": card, **fields}
    boto3.resource("dynamodb", region_name="us-east-1").Table(reload_settings().charges_table).put_item(Item=item)
    charge = PaymentTables.from_settings().begin_charge_attempt(item["charge_key"], 1, now, now)
    return ChargeWork.from_charge_item(charge, attempt=1)


def payments(server, charge_key):
    return [p for p in server.sandbox.payments() if p["merchantReference"] == charge_key]


def test_client_for_adyen_is_the_adyen_adapter_built_from_the_settings(adyen):
    client = psp.client_for("adyen")
    assert isinstance(client, AdyenPsp) and client.merchant_account == MERCHANT_ACCOUNT
    assert client.environment == "test" and psp.client_for("adyen") is client  # kept for the process
    assert psp.adyen_hmac_key() == HMAC_KEY
    assert isinstance(psp.client_for("stripe"), psp.PspClient)


def test_a_charge_is_one_payment_at_adyen_and_nothing_at_stripe(adyen, sandbox):
    work = stored()
    result = executor.execute(work)
    assert (result.outcome, result.psp_status) == ("succeeded", "Authorised")
    [payment] = payments(adyen, work.charge_key)
    assert payment["amount"] == {"currency": "EUR", "value": 2500} and payment["pspReference"] == result.psp_reference
    charge = PaymentTables.from_settings().get_charge(work.charge_key)
    assert charge["psp_reference"] == result.psp_reference and charge["psp_calls"] == 1
    assert sandbox.charges() == []  # no PaymentIntent: no Stripe step ran


def test_running_twice_replays_the_key_and_charges_once(adyen):
    work = stored()
    first = executor.execute(work)
    again = executor.execute(work.model_copy(update={"attempt": 2}))
    assert first == again
    assert len(payments(adyen, work.charge_key)) == 1
    assert PaymentTables.from_settings().get_charge(work.charge_key)["psp_calls"] == 2


@pytest.mark.parametrize(("holder", "code", "reason"), [("DECLINED", "refused", "Refused"),
                                                         ("CARD_EXPIRED", "expired_card", "Expired Card"),
                                                         ("ERROR", "acquirer_error", "Acquirer Error")])
def test_a_refusal_is_failed_with_its_reason(adyen, holder, code, reason):
    result = executor.execute(stored(card=adyen_card(holder)))
    assert (result.outcome, result.failure_code, result.failure_reason) == ("failed", code, reason)


@pytest.mark.parametrize("kind", ["http_500", "http_503", "connection_reset", "lost_response"])
def test_an_unclear_answer_is_retried_under_the_same_key_and_charges_once(adyen, kind):
    work = stored()
    adyen.sandbox.faults.push(kind, match={"path": "/v71/payments"})
    with pytest.raises(PspTransientError):
        executor.execute(work)
    result = executor.execute(work)  # the workflow's Retry: the same input
    assert result.outcome == "succeeded"
    assert [p["resultCode"] for p in payments(adyen, work.charge_key)] == ["Authorised"]
    assert PaymentTables.from_settings().get_charge(work.charge_key)["psp_reference"] == result.psp_reference


def test_the_key_sent_is_the_charges_key_bound_to_the_merchant_account(adyen):
    work = stored()
    executor.execute(work)
    key = wire_key("test", MERCHANT_ACCOUNT, "charge:chk_a1:EUR")
    assert ("sandbox_adyen_api_key", key) in adyen.sandbox.books._keys


def test_past_the_keys_safe_age_nothing_is_sent_and_a_human_decides(adyen):
    # the charge item's first attempt decides, whatever the workflow's input says (a re-drive, an edited input)
    work = stored(first_attempt_at=clock.iso(clock.now() - timedelta(days=7)))
    fresh_input = work.model_copy(update={"first_attempt_at": clock.iso()})
    with pytest.raises(PspOutcomeUnknown):
        executor.execute(fresh_input)
    assert payments(adyen, work.charge_key) == []


def test_a_retry_of_a_charge_without_a_recorded_first_attempt_is_never_replayed(adyen):
    work = stored()
    adyen.sandbox.faults.push("http_503", match={"path": "/v71/payments"})
    with pytest.raises(PspTransientError):
        executor.execute(work)
    boto3.client("dynamodb", region_name="us-east-1").update_item(
        TableName=reload_settings().charges_table, Key={"charge_key": {"S": work.charge_key}},
        UpdateExpression="REMOVE first_attempt_at")
    with pytest.raises(PspOutcomeUnknown):
        executor.execute(work)
    assert payments(adyen, work.charge_key) == []  # the 503 made nothing, and nothing was replayed


def test_a_retry_that_adyen_refuses_is_unknown_never_failed(adyen):
    work = stored(card=json.dumps({"type": "scheme", "encryptedCardNumber": "not-a-test-value"}))
    with pytest.raises(PspPermanentError):  # first call: Adyen could not decrypt it, nothing was made
        executor.execute(work)
    with pytest.raises(PspOutcomeUnknown):  # a later call: the refusal proves nothing about the first
        executor.execute(work)


def test_a_card_paying_several_currencies_is_refused_before_any_call(adyen):
    work = stored(checkout_currencies=["EUR", "USD"])
    with pytest.raises(PspPermanentError) as refused:
        executor.execute(work)
    assert refused.value.code == "payment_method_single_currency"
    assert adyen.sandbox.payments() == []
    assert PaymentTables.from_settings().get_charge(work.charge_key)["psp_calls"] == 0


def test_an_invocation_out_of_time_sends_nothing(adyen):
    work = stored()
    with psp.calls_within(2500), pytest.raises(PspTransientError):  # 0.5 s left after the margin
        executor.execute(work)
    assert adyen.sandbox.payments() == []


def _answered(monkeypatch, message):
    """Adyen's answer replaced at the library's edge (its PaymentsApi), so every line of ours runs."""
    from Adyen.services.checkout import PaymentsApi

    class Answer:
        pass

    Answer.message = message
    monkeypatch.setattr(PaymentsApi, "payments", lambda self, request, idempotency_key=None, **_: Answer())


def test_a_voucher_adyen_asks_for_ends_failed_not_parked(adyen, monkeypatch):
    # PresentToShopper (a voucher paid elsewhere, later) is not handed over: it never reaches the buyer
    _answered(monkeypatch, {"resultCode": "PresentToShopper", "pspReference": "SBX9999999999999",
                            "action": {"type": "voucher", "paymentMethodType": "boletobancario"}})
    result = executor.execute(stored())
    assert (result.outcome, result.failure_code) == ("failed", "shopper_action_not_supported")
    assert result.psp_reference == "SBX9999999999999"


def test_a_redirect_adyen_asks_for_is_handed_to_the_storefront_as_pending(adyen, monkeypatch):
    action = {"type": "redirect", "url": "https://example.invalid/3ds", "method": "GET",
              "paymentMethodType": "scheme"}
    _answered(monkeypatch, {"resultCode": "RedirectShopper", "pspReference": "SBX9999999999999", "action": action})
    result = executor.execute(stored())
    assert (result.outcome, result.psp_status, result.action) == ("pending", "requires_action", "adyen_action")
    assert json.loads(result.adyen_action) == action and result.psp_reference == "SBX9999999999999"


BROWSER = {"browserInfo": {"acceptHeader": "text/html", "colorDepth": 24, "javaEnabled": False, "language": "en",
                           "screenHeight": 900, "screenWidth": 1440, "timeZoneOffset": 0, "userAgent": "Mozilla/5.0"},
           "origin": "https://shop.example"}


@pytest.mark.parametrize(("browser", "kind", "code"), [(BROWSER, "threeDS2", "ChallengeShopper"),
                                                       (None, "redirect", "RedirectShopper")])
def test_the_3ds2_card_is_pending_with_adyens_action(adyen, browser, kind, code):
    # the buyer's browser stored with the charge asks Adyen for native 3-D Secure 2; without it, the redirect flow
    card = json.loads(adyen_card()) | {"encryptedCardNumber": "test_4212345678910006"}
    extra = {"adyen_browser": json.dumps(browser)} if browser else {}
    result = executor.execute(stored(card=json.dumps(card), **extra))
    assert (result.outcome, result.psp_status, result.action) == ("pending", "requires_action", "adyen_action")
    assert json.loads(result.adyen_action)["type"] == kind
    [payment] = adyen.sandbox.payments()
    assert payment["resultCode"] == code
