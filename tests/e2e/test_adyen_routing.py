"""Issue 18: a rule routing EUR cards to Adyen, end to end on the local stack through HTTP only.

The stack of this module runs the synthesized template (default context) with the Adyen sandbox beside Stripe's
and the routing given as `make run --psp-routing` gives it: the local stack replaces the template's PSP_ROUTING
value only in the functions whose template sets it. Each Lambda has only its template environment and role, so an
Adyen-routed checkout succeeding here proves the infra wiring: PaymentApi routes (PSP_ROUTING and the Adyen names
its settings check), the Executor charges at Adyen (its Checkout base, merchant account, and key read from the SSM
parameter its role may read), and no function made a call its role does not grant.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.stack import LocalStack, default_adyen_sandbox
from psp_sandbox.adyen.books import complete_challenge, complete_redirect, sandbox_encrypted
from tests.e2e.conftest import running_stack
from tests.e2e.test_http_flows import FINAL, dead_letters_for, intents_of, unique, wait_final
from tests.support.waiting import wait_for
from verification.storefront import RETURN_URL, ApiClient

pytestmark = pytest.mark.xdist_group("e2e")

EUR_CARDS = {"rules": [{"name": "eur-cards", "psp": "adyen", "currencies": ["EUR"], "methods": ["card"]}],
             "failover": {"stripe": "adyen"}}  # and while Stripe is down, Adyen takes its new card charges


@pytest.fixture(scope="module")
def stack():
    # the Sweeper every 5 s (rate(1 minute) as deployed): a charge parked while Stripe was down is driven again soon
    yield from running_stack(adyen_sandbox=default_adyen_sandbox, psp_routing=json.dumps(EUR_CARDS),
                             schedule_interval=5)


@pytest.fixture(scope="module")
def api(stack):
    return ApiClient(stack.api_url, stack.api_key)


def adyen_card(holder: str = "J Smith") -> dict[str, str]:
    """What Adyen's Card Component hands a storefront (the sandbox's stand-in for its browser encryption)."""
    return {"type": "scheme", "encryptedCardNumber": sandbox_encrypted("test_4111111111111111"),
            "encryptedExpiryMonth": sandbox_encrypted("test_03"), "encryptedExpiryYear": sandbox_encrypted("test_2030"),
            "encryptedSecurityCode": sandbox_encrypted("test_737"), "holderName": holder}


def body(checkout_id: str, orders: list[tuple[str, str, str]], method: dict[str, Any]) -> dict[str, Any]:
    return {"buyer_info": {"buyer_id": "buyer_nl", "country": "NL"}, "checkout_id": checkout_id,
            "payment_method": {"type": "card", **({"return_url": RETURN_URL} if "adyen" in method else {}), **method},
            "payment_orders": [{"seller_account": seller, "amount": amount, "currency": currency,
                                "payment_order_id": f"{checkout_id}_{n}"}
                               for n, (seller, amount, currency) in enumerate(orders)]}


def adyen_payments(stack: LocalStack, checkout_id: str) -> list[dict[str, Any]]:
    """The payments the Adyen sandbox made for the checkout (its own records: the reference is our charge key)."""
    assert stack.adyen_sandbox is not None
    return [p for p in stack.adyen_sandbox.sandbox.payments() if p["merchantReference"].startswith(f"{checkout_id}#")]


def stored_order(stack: LocalStack, order_id: str) -> dict[str, str]:
    item = stack.client("dynamodb").get_item(TableName=stack.outputs["PaymentOrdersTableName"],
                                             Key={"payment_order_id": {"S": order_id}}, ConsistentRead=True)["Item"]
    return {key: value["S"] for key, value in item.items() if "S" in value}


def test_a_eur_card_checkout_is_charged_once_at_adyen_and_none_at_stripe(stack, api):
    # Given a EUR checkout of two sellers, its card encrypted by Adyen's component
    checkout_id = unique("chk_adyen")
    sent = body(checkout_id, [("seller_nl1", "12.34", "EUR"), ("seller_nl2", "5.00", "EUR")], {"adyen": adyen_card()})
    status, answer, _ = api.post_checkout(sent)
    assert status == 202, answer
    # Then every order succeeds, charged at Adyen by the eur-cards rule
    orders = [wait_final(api, o["payment_order_id"]) for o in sent["payment_orders"]]
    assert [o["payment_order_status"] for o in orders] == ["SUCCESS", "SUCCESS"], orders
    [payment] = adyen_payments(stack, checkout_id)
    assert (payment["amount"], payment["resultCode"]) == ({"currency": "EUR", "value": 1734}, "Authorised")
    stored = [stored_order(stack, o["payment_order_id"]) for o in sent["payment_orders"]]
    assert [(o["psp"], o["psp_route"], o["psp_reference"]) for o in stored] == [
        ("adyen", "eur-cards", payment["pspReference"])] * 2
    # and nothing at Stripe
    assert intents_of(stack, checkout_id) == []


def test_a_usd_checkout_in_the_same_stack_still_goes_to_stripe(stack, api):
    checkout_id = unique("chk_usd")
    sent = body(checkout_id, [("seller_us1", "12.34", "USD")], {"token": "pm_card_visa"})
    status, answer, _ = api.post_checkout(sent)
    assert status == 202, answer
    assert wait_final(api, f"{checkout_id}_0")["payment_order_status"] == "SUCCESS"
    assert [(c["currency"], c["amount"]) for c in intents_of(stack, checkout_id)] == [("usd", 1234)]
    assert stored_order(stack, f"{checkout_id}_0")["psp"] == "stripe"
    assert adyen_payments(stack, checkout_id) == []


def test_a_declined_adyen_card_fails_every_order_with_its_reason(stack, api):
    checkout_id = unique("chk_adyen_no")
    sent = body(checkout_id, [("seller_nl1", "7.50", "EUR")], {"adyen": adyen_card("DECLINED")})
    assert api.post_checkout(sent)[0] == 202
    order = wait_final(api, f"{checkout_id}_0")
    assert (order["payment_order_status"], order["failure_code"]) == ("FAILED", "refused"), order
    assert [p["resultCode"] for p in adyen_payments(stack, checkout_id)] == ["Refused"]


@pytest.mark.parametrize(("holder", "status", "code"), [("RECEIVED", "SUCCESS", None),
                                                       ("RECEIVED_DECLINED", "FAILED", "refused")])
def test_a_payment_adyen_answers_received_is_decided_by_its_authorisation_notification(stack, api, holder, status,
                                                                                       code):
    # Adyen answers `Received`; its signed AUTHORISATION reaches /v1/webhooks/adyen, the processor records it on the
    # charge and brings it forward, and the sweeper's next attempt decides from it (no dead letter, one payment)
    checkout_id = unique("chk_adyen_rcv")
    sent = body(checkout_id, [("seller_nl1", "9.99", "EUR")], {"adyen": adyen_card(holder)})
    assert api.post_checkout(sent)[0] == 202
    order = wait_final(api, f"{checkout_id}_0", timeout=60)
    assert (order["payment_order_status"], order.get("failure_code")) == (status, code), order
    [payment] = adyen_payments(stack, checkout_id)
    assert payment["resultCode"] == ("Authorised" if status == "SUCCESS" else "Refused")
    assert dead_letters_for(stack, "WorkflowDlqUrl", checkout_id) == []


def test_a_stripe_token_for_a_eur_card_routed_to_adyen_is_refused_before_anything_is_charged(stack, api):
    checkout_id = unique("chk_bound")
    sent = body(checkout_id, [("seller_nl1", "7.50", "EUR")], {"token": "pm_card_visa"})
    status, answer, _ = api.post_checkout(sent)
    assert status == 422 and "payment_method_not_for_routed_psp" in json.dumps(answer), answer
    assert adyen_payments(stack, checkout_id) == [] and intents_of(stack, checkout_id) == []


# --- refunds at Adyen, finished by Adyen's REFUND notification (issue 18) -----------------------------------------


def charged_order(stack: LocalStack, api: ApiClient, prefix: str) -> str:
    checkout_id = unique(prefix)
    sent = body(checkout_id, [("seller_nl1", "12.34", "EUR")], {"adyen": adyen_card()})
    assert api.post_checkout(sent)[0] == 202
    order_id = sent["payment_orders"][0]["payment_order_id"]
    assert wait_final(api, order_id)["payment_order_status"] == "SUCCESS"
    return order_id


def refund_final(stack: LocalStack, api: ApiClient, refund_id: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        status, answer, _ = api.request("GET", f"/v1/refunds/{refund_id}")
        return answer if status == 200 and answer["status"] != "PENDING" else None

    return stack.wait_until(final, timeout=30)


def test_an_adyen_charged_order_is_refunded_over_http_and_succeeds_by_adyens_notification(stack, api):
    # Given a EUR order charged at Adyen
    order_id = charged_order(stack, api, "chk_adyen_rf")
    # When the storefront refunds 5.00 of it
    refund_id = unique("rf_adyen")
    status, answer, _ = api.request("POST", f"/v1/payments/{order_id}/refunds",
                                    {"refund_id": refund_id, "amount": "5.00", "reason": "damaged"})
    assert (status, answer["status"]) == (202, "PENDING"), answer
    # Then the Refund worker refunds it at Adyen, whose REFUND notification (signed, POSTed by the sandbox to the
    # local API's /v1/webhooks/adyen) finishes it: SUCCEEDED while held
    done = refund_final(stack, api, refund_id)
    assert (done["status"], done["amount"], done["currency"], done["timing"]) == ("SUCCEEDED", "5.00", "EUR", "held")
    assert stack.adyen_sandbox is not None
    [made] = [m for m in stack.adyen_sandbox.sandbox.books.modifications if m.get("reference") == refund_id]
    assert (made["amount"], done["psp_refund_id"]) == ({"currency": "EUR", "value": 500}, made["pspReference"])
    [delivered] = [i for i in stack.adyen_sandbox.sandbox.notifier.delivered
                   if i["eventCode"] == "REFUND" and i["merchantReference"] == refund_id]
    assert delivered["success"] == "true"
    status, order, _ = api.get_order(order_id)
    assert (order["refunded"], [r["status"] for r in order["refunds"]]) == ("5.00", ["SUCCEEDED"])


def test_a_refund_adyen_refuses_in_its_notification_ends_failed_and_frees_its_amount(stack, api):
    order_id = charged_order(stack, api, "chk_adyen_rf_no")
    refund_id = unique("rf_FAIL")  # the sandbox refuses a refund whose reference contains FAIL, in its notification
    status, _, _ = api.request("POST", f"/v1/payments/{order_id}/refunds", {"refund_id": refund_id})
    assert status == 202
    done = refund_final(stack, api, refund_id)
    assert (done["status"], done["failure_code"]) == ("FAILED", "adyen_refund_refused")
    status, order, _ = api.get_order(order_id)
    assert order["refunded"] == "0.00"


def set_stripe_breaker(stack: LocalStack, state: str, seconds: int = 0) -> None:
    """What `python -m ops psp open|close stripe` writes (an operator's open: no probe before its end)."""
    now = datetime.now(UTC)
    iso = lambda at: at.isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: E731 - clock.iso's form
    fields = ({"state": "open", "open_until": iso(now + timedelta(seconds=seconds)), "opened_at": iso(now),
               "forced_by": "e2e"} if state == "open" else {"state": "closed", "closed_at": iso(now)})
    stack.client("dynamodb").put_item(TableName=stack.outputs["PspHealthTableName"],
                                      Item={"psp": {"S": "stripe"}, **{k: {"S": v} for k, v in fields.items()}})


def test_while_stripe_is_down_a_new_card_is_routed_to_adyen_and_a_stripe_token_waits_for_stripe(stack, api):
    """Failover through HTTP, every function with only its template environment and role: PaymentApi reads the
    breaker (PspHealth) to route, the route endpoint names Adyen, the Adyen card is charged there; a checkout paid
    with a Stripe token meanwhile stays Stripe's, its charge parked (ChargeParked, nothing sent), and is charged once
    when Stripe is back, by the Sweeper's re-drive."""
    set_stripe_breaker(stack, "open", seconds=600)
    try:
        orders = [{"seller_account": "seller_us1", "amount": "30.00", "currency": "USD"}]
        status, route, _ = api.request("POST", "/v1/payment_routes", {"payment_orders": orders})
        assert (status, route["psp"], route["routes"][0]["rule"]) == (200, "adyen", "default/failover"), route
        moved = unique("chk_fo")
        assert api.post_checkout(body(moved, [("seller_us1", "30.00", "USD")], {"adyen": adyen_card()}))[0] == 202
        assert wait_final(api, f"{moved}_0", timeout=30)["payment_order_status"] == "SUCCESS"
        assert stored_order(stack, f"{moved}_0")["psp_route"] == "default/failover"
        assert len(adyen_payments(stack, moved)) == 1 and intents_of(stack, moved) == []
        # a buyer whose card was tokenized at Stripe before the outage: accepted, and it waits
        waiting = unique("chk_wait")
        assert api.post_checkout(body(waiting, [("seller_us1", "8.00", "USD")], {"token": "pm_card_visa"}))[0] == 202
        stack.wait_until(lambda: "psp_down_since" in stored_charge(stack, f"{waiting}#USD"), timeout=30)
        assert api.get_order(f"{waiting}_0")[1]["payment_order_status"] not in FINAL
        assert intents_of(stack, waiting) == []
    finally:
        set_stripe_breaker(stack, "closed")  # Stripe is back (an operator's close)
    try:
        assert wait_final(api, f"{waiting}_0", timeout=75)["payment_order_status"] == "SUCCESS"
    except AssertionError:
        raise AssertionError((stored_charge(stack, f"{waiting}#USD"), datetime.now(UTC).isoformat())) from None
    assert len(intents_of(stack, waiting)) == 1 and adyen_payments(stack, waiting) == []


def stored_charge(stack: LocalStack, charge_key: str) -> dict[str, Any]:
    item = stack.client("dynamodb").get_item(TableName=stack.outputs["ChargesTableName"],
                                             Key={"charge_key": {"S": charge_key}}, ConsistentRead=True).get("Item")
    return item or {}


@pytest.mark.parametrize(("holder", "field"), [("J Smith", "threeDSResult"), ("J Smith", "redirectResult")])
def test_a_card_the_issuer_challenges_waits_for_the_buyers_details_posted_over_http(stack, api, holder, field):
    # Given a EUR checkout paid with Adyen's 3-D Secure test card: native with the buyer's browser, else redirect
    checkout_id = unique("chk_adyen_3ds")
    card = adyen_card(holder) | {"encryptedCardNumber": sandbox_encrypted("test_4212345678910006")}
    # with Drop-in's browserInfo and the page's origin, the charge asks Adyen for native 3-D Secure 2
    browser = {"browserInfo": {"acceptHeader": "text/html", "colorDepth": 24, "javaEnabled": False,
                               "language": "nl-NL", "screenHeight": 900, "screenWidth": 1440, "timeZoneOffset": -60,
                               "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"},
               "origin": "https://shop.example"}
    method = {"adyen": card, **({"adyen_browser": browser} if field == "threeDSResult" else {})}
    sent = body(checkout_id, [("seller_nl1", "20.00", "EUR"), ("seller_nl2", "3.00", "EUR")], method)
    assert api.post_checkout(sent)[0] == 202

    def shown() -> dict[str, Any] | None:
        status, order, _ = api.get_order(f"{checkout_id}_0")
        assert status == 200 and order["payment_order_status"] in ("NOT_STARTED", "EXECUTING"), order
        return (order.get("next_action") or {}).get("action")

    # When the storefront reads the action, the buyer completes it, and the storefront posts Drop-in's details
    action = wait_for(shown, 30, "the Adyen action shown")
    result = complete_redirect(action) if field == "redirectResult" else complete_challenge(action)
    path = f"/v1/checkouts/{checkout_id}/payment_details"
    status, view, _ = api.request("POST", path, {"currency": "EUR", "details": {field: result}})
    assert (status, view.get("status")) == (202, "recorded"), view
    # Then the sweeper's next run sends them to Adyen: every order SUCCESS, one payment, nothing dead-lettered
    orders = [wait_final(api, o["payment_order_id"], timeout=60) for o in sent["payment_orders"]]
    assert [o["payment_order_status"] for o in orders] == ["SUCCESS", "SUCCESS"], orders
    [payment] = adyen_payments(stack, checkout_id)
    assert (payment["amount"], payment["resultCode"]) == ({"currency": "EUR", "value": 2300}, "Authorised")
    assert dead_letters_for(stack, "WorkflowDlqUrl", checkout_id) == []
    # the storefront's retry is answered as the first
    again = api.request("POST", path, {"currency": "EUR", "details": {field: result}})
    assert (again[0], again[2].get("idempotent-replayed")) == (202, "true")


def test_no_function_made_a_call_its_role_does_not_grant(stack):
    """The Refund worker read Adyen's key and the receiver Adyen's HMAC key, each from the SSM parameter its role
    names: as deployed."""
    assert stack.ungranted_calls() == {}
