"""3-D Secure at Adyen (issue 18): a card routed to Adyen whose issuer challenges the buyer, through the API's
handler, the workflow's steps, the sweeper, moto and both sandboxes. The first attempt parks the charge EXECUTING
with Adyen's action on the orders (next_action `adyen_action`) until threeds_timeout_s; the buyer's browser (the
sandbox's `complete_challenge`) gives the details, which the storefront posts to
POST /v1/checkouts/{checkout_id}/payment_details; the API records them and brings the charge forward, and the
sweeper's re-drive sends them to Adyen's /payments/details, whose answer decides. No details by the deadline:
FAILED authentication_abandoned with no call."""

import json
from datetime import timedelta

import boto3
import pytest

from functions.executor import handler as executor
from functions.executor import sweeper
from functions.payment import api, finalize
from functions.shared import clock
from functions.shared.config import settings
from functions.shared.errors import PspOutcomeUnknown
from functions.shared.tables import PaymentTables, PayoutsTable, WalletTable
from psp_sandbox.adyen.books import complete_challenge, complete_redirect, sandbox_encrypted
from psp_sandbox.adyen.server import MERCHANT_ACCOUNT
from tests.integration.support import place, work_of
from tests.integration.test_adyen_checkout import adyen_card, adyen_payments, orders_of, post, routed  # noqa: F401
from tests.integration.test_adyen_notifications import body_of, processed, resigned
from tests.integration.test_adyen_notifications import post as notify
from tests.integration.test_executor_adyen import adyen  # noqa: F401 - the fixture
from tests.integration.test_executor_checkout import begin, run_charge
from tests.integration.test_refunds import invariants_hold
from tests.integration.test_steps import create_machine
from tests.integration.test_tenancy import call
from tests.support.aws import drain
from tests.support.events import FakeContext, http_event
from verification.storefront import RETURN_URL

CHALLENGE_CARD = "test_4212345678910006"  # Adyen's 3-D Secure 2 test card: the issuer challenges


@pytest.fixture
def workflow(routed):  # noqa: F811 - the fixture imported above
    create_machine(boto3.client("stepfunctions", region_name="us-east-1"))
    return routed


# Drop-in's state.data.browserInfo and the storefront's origin: with them the charge asks Adyen for native 3-D Secure 2
BROWSER = {"browserInfo": {"acceptHeader": "text/html", "colorDepth": 24, "javaEnabled": False, "language": "nl-NL",
                           "screenHeight": 900, "screenWidth": 1440, "timeZoneOffset": -60,
                           "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"},
           "origin": "https://shop.example"}


def challenge_card(holder="J Smith"):
    return adyen_card(holder) | {"encryptedCardNumber": sandbox_encrypted(CHALLENGE_CARD)}


def charge(checkout_id):
    return PaymentTables.from_settings().get_charge(f"{checkout_id}#EUR")


def challenged(checkout_id, holder="J Smith", browser=BROWSER):
    """A checkout paid with the challenge card (with the buyer's browser: native 3-D Secure 2; without: Adyen's
    redirect flow), its first attempt run: EXECUTING, the action shown on the checkout (read through the API, as
    the storefront does). Returns that action."""
    method = {"adyen": challenge_card(holder)} | ({"adyen_browser": browser} if browser else {})
    assert post(checkout_id, **method)[0] == 202
    assert run_charge(begin(checkout_id, "EUR")) == {"charge_status": "EXECUTING", "psp_status": "requires_action"}
    return shown(checkout_id)


def shown(checkout_id):
    """The action the checkout shows now (GET, as the storefront reads it)."""
    answer = api.handler(http_event("GET", f"/v1/checkouts/{checkout_id}"), FakeContext())
    assert answer["statusCode"] == 200
    view = json.loads(answer["body"])
    assert view["next_action"]["type"] == "adyen_action"
    return view["next_action"]["action"]


def send_details(checkout_id, details, currency="EUR", action_id=None):
    body = {"currency": currency, "details": details} | ({"action_id": action_id} if action_id else {})
    answer = api.handler(http_event("POST", f"/v1/checkouts/{checkout_id}/payment_details", body), FakeContext())
    return answer["statusCode"], json.loads(answer["body"]), answer.get("headers") or {}


def redrive(checkout_id):
    """The sweeper's run (only a due charge is re-driven), then the workflow of the attempt it began."""
    assert sweeper.sweep()["redriven"] == 1
    return run_charge(work_of(checkout_id, "EUR", attempt=int(charge(checkout_id)["attempts"])))


def details_calls(server):
    """Payments /payments/details decided (the others still wait for the buyer's action)."""
    return [p for p in server.sandbox.payments()
            if p["resultCode"] not in ("ChallengeShopper", "IdentifyShopper", "RedirectShopper")]


def test_a_challenge_is_shown_completed_by_the_buyer_and_charged_once(workflow):
    # Given a EUR checkout whose card the issuer challenges: the orders wait, showing Adyen's action
    action = challenged("chk_c1")
    assert (action["type"], action["subtype"]) == ("threeDS2", "challenge") and action["token"]
    stored = charge("chk_c1")
    assert stored["psp_status"] == "requires_action" and stored["due_at"] == stored["action_expires_at"]
    waited = clock.parse_iso(stored["action_expires_at"]) - clock.parse_iso(stored["updated_at"])
    assert waited.total_seconds() == settings().threeds_timeout_s
    order = json.loads(api.handler(http_event("GET", "/v1/payments/chk_c1_0"), FakeContext())["body"])
    assert order["payment_order_status"] == "EXECUTING" and order["next_action"]["action"] == action
    [payment] = adyen_payments(workflow, "chk_c1")
    assert payment["resultCode"] == "ChallengeShopper"
    assert sweeper.sweep()["redriven"] == 0  # not polled meanwhile

    # When the buyer completes it and the storefront posts Drop-in's details
    status, view, headers = send_details("chk_c1", {"threeDSResult": complete_challenge(action)})
    assert status == 202 and view["status"] == "recorded" and "Idempotent-Replayed" not in headers
    assert charge("chk_c1")["due_at"] <= clock.iso()  # brought forward: the sweeper's next run decides it
    # the orders no longer show the answered action (the storefront must not run it again); the charge keeps it
    checkout = json.loads(api.handler(http_event("GET", "/v1/checkouts/chk_c1"), FakeContext())["body"])
    assert checkout.get("next_action") is None
    assert all(o.get("next_action") is None for o in checkout["payment_orders"])
    assert adyen_payments(workflow, "chk_c1")[0]["resultCode"] == "ChallengeShopper"  # the API called nobody

    # Then the re-drive sends them to Adyen and the charge ends SUCCESS, one payment, the sellers credited
    assert redrive("chk_c1")["charge_status"] == "SUCCESS"
    [payment] = adyen_payments(workflow, "chk_c1")
    assert payment["resultCode"] == "Authorised"
    orders = orders_of("chk_c1")
    assert [o["payment_order_status"] for o in orders] == ["SUCCESS", "SUCCESS"]
    assert all(o["psp_reference"] == payment["pspReference"] and "next_action" not in o for o in orders)
    assert WalletTable.from_settings().balances("seller_a")["EUR"]["pending_minor"] == 1234
    assert all(PayoutsTable.from_settings().get(o["payment_order_id"])["payout_status"] == "HELD" for o in orders)
    final = charge("chk_c1")
    assert "psp_details" not in final and final["psp_details_digest"]
    invariants_hold()
    # the storefront's retry of the same details is answered as the first, also now the charge is final
    status, _, headers = send_details("chk_c1", {"threeDSResult": complete_challenge(action)})
    assert status == 202 and headers.get("Idempotent-Replayed") == "true"


def test_a_challenge_the_buyer_fails_ends_failed_with_adyens_reason(workflow):
    action = challenged("chk_c2")
    assert send_details("chk_c2", {"threeDSResult": complete_challenge(action, authenticated=False)})[0] == 202
    assert redrive("chk_c2")["charge_status"] == "FAILED"
    orders = orders_of("chk_c2")
    assert [o["payment_order_status"] for o in orders] == ["FAILED", "FAILED"]
    assert {(o["failure_code"], o["failure_reason"]) for o in orders} == {
        ("3d_not_authenticated", "3D Not Authenticated")}
    assert [p["resultCode"] for p in adyen_payments(workflow, "chk_c2")] == ["Refused"]
    assert WalletTable.from_settings().balances("seller_a") == {}


def test_a_challenge_abandoned_past_its_deadline_fails_without_a_call(workflow):
    challenged("chk_c3")
    clock.advance(settings().threeds_timeout_s + 1)
    assert redrive("chk_c3")["charge_status"] == "FAILED"
    orders = orders_of("chk_c3")
    assert {o["failure_code"] for o in orders} == {"authentication_abandoned"}
    assert details_calls(workflow) == []  # nothing sent: without details Adyen authorises nothing
    assert [p["resultCode"] for p in adyen_payments(workflow, "chk_c3")] == ["ChallengeShopper"]
    # details arriving after are refused: the charge is final
    action = {"token": "late"}
    status, body, _ = send_details("chk_c3", {"threeDSResult": complete_challenge(action)})
    assert (status, body["error"]["code"]) == (409, "no_action_pending")


def test_details_after_the_deadline_are_refused_and_the_abandonment_stands(workflow):
    action = challenged("chk_c4")
    clock.advance(settings().threeds_timeout_s + 1)
    status, body, _ = send_details("chk_c4", {"threeDSResult": complete_challenge(action)})
    assert (status, body["error"]["code"]) == (409, "no_action_pending")
    assert "expired" in body["error"]["message"]
    assert redrive("chk_c4")["charge_status"] == "FAILED"
    assert details_calls(workflow) == []


def test_the_same_details_twice_are_one_and_other_details_after_them_conflict(workflow):
    action = challenged("chk_c5")
    details = {"threeDSResult": complete_challenge(action)}
    assert send_details("chk_c5", details)[0] == 202
    status, view, headers = send_details("chk_c5", details)
    assert status == 202 and headers.get("Idempotent-Replayed") == "true" and view["currency"] == "EUR"
    status, body, _ = send_details("chk_c5", {"threeDSResult": complete_challenge(action, authenticated=False)})
    assert (status, body["error"]["code"]) == (409, "payment_details_conflict")
    assert redrive("chk_c5")["charge_status"] == "SUCCESS"  # the first details decided


def test_details_for_a_stripe_charge_an_unknown_checkout_or_currency_or_another_clients(workflow):
    place("chk_s1", orders=(("seller_a", "12.34", "USD"),), card="pm_card_visa")
    details = {"threeDSResult": "eyJ0cmFuc1N0YXR1cyI6IlkifQ=="}
    status, body, _ = send_details("chk_s1", details, currency="USD")
    assert (status, body["error"]["code"]) == (409, "no_action_pending")
    assert (send_details("chk_none", details)[0], send_details("chk_s1", details)[0]) == (404, 404)
    challenged("chk_c6")
    status, body, _ = call("shop_b", "POST", "/v1/checkouts/chk_c6/payment_details",
                           {"currency": "EUR", "details": details})
    assert (status, body["error"]["code"]) == (404, "checkout_not_found")
    assert "psp_details" not in charge("chk_c6")


def test_details_for_a_charge_not_waiting_for_them_are_refused(workflow):
    assert post("chk_ok")[0] == 202  # a card Adyen authorises at once
    assert run_charge(begin("chk_ok", "EUR"))["charge_status"] == "SUCCESS"
    status, body, _ = send_details("chk_ok", {"threeDSResult": "eyJ4IjoieSJ9"})
    assert (status, body["error"]["code"]) == (409, "no_action_pending")


@pytest.mark.parametrize("details", [{}, {"threeDSResult": 5}, {"threeDSResult": {"nested": "x"}},
                                     {"threeDSResult": "x" * 20_001}, {"bad name": "x"},
                                     {f"k{n}": "v" for n in range(9)}])
def test_details_are_a_few_string_fields(workflow, details):
    challenged("chk_c7")
    assert send_details("chk_c7", details)[0] == 422
    assert "psp_details" not in charge("chk_c7")


def test_a_run_killed_after_adyens_answer_ends_the_same_when_run_again(workflow):
    # Given the details recorded and a re-drive whose executor got Adyen's answer, then died before finalize
    action = challenged("chk_c8")
    send_details("chk_c8", {"threeDSResult": complete_challenge(action)})
    assert sweeper.sweep()["redriven"] == 1
    work = work_of("chk_c8", "EUR", attempt=int(charge("chk_c8")["attempts"]))
    assert executor.execute(work).outcome == "succeeded"  # ... and nothing more of that run
    assert [o["payment_order_status"] for o in orders_of("chk_c8")] == ["EXECUTING", "EXECUTING"]
    # When the workflow's retry (or the sweeper's next attempt) runs the charge again
    assert run_charge(work)["charge_status"] == "SUCCESS"
    # Then the same details went under the same key: Adyen replayed its answer, one payment, one authorisation
    [payment] = adyen_payments(workflow, "chk_c8")
    assert payment["resultCode"] == "Authorised"
    emitted = [i for i in workflow.sandbox.notifier.emitted if i["eventCode"] == "AUTHORISATION"]
    assert len(emitted) == 1 and int(charge("chk_c8")["psp_calls"]) == 3
    invariants_hold()


def test_a_lost_answer_to_the_details_is_retried_under_the_same_key(workflow):
    action = challenged("chk_c9")
    send_details("chk_c9", {"threeDSResult": complete_challenge(action)})
    workflow.sandbox.faults.push("lost_response", match={"path": "/v71/payments/details"})
    assert sweeper.sweep()["redriven"] == 1
    work = work_of("chk_c9", "EUR", attempt=int(charge("chk_c9")["attempts"]))
    from functions.shared.errors import PspTransientError
    with pytest.raises(PspTransientError):
        run_charge(work)
    assert run_charge(work)["charge_status"] == "SUCCESS"
    assert [p["resultCode"] for p in adyen_payments(workflow, "chk_c9")] == ["Authorised"]


def test_a_re_drive_before_the_deadline_without_details_shows_the_same_action_and_keeps_the_deadline(workflow):
    action = challenged("chk_c10")
    deadline = charge("chk_c10")["action_expires_at"]
    # a re-drive before the deadline (e.g. a finalize that died before pushing the sweep to it)
    tables = PaymentTables.from_settings()
    stored = charge("chk_c10")
    now = clock.iso()
    assert tables.begin_charge_attempt("chk_c10#EUR", 2, now,
                                       clock.iso(clock.now() + timedelta(seconds=settings().executing_deadline_s)),
                                       expected_due_at=stored["due_at"])
    result = run_charge(work_of("chk_c10", "EUR", attempt=2))
    assert result == {"charge_status": "EXECUTING", "psp_status": "requires_action"}
    after = charge("chk_c10")
    assert after["action_expires_at"] == deadline and after["due_at"] == deadline
    assert after["next_action"]["action"] == action
    assert len(adyen_payments(workflow, "chk_c10")) == 1 and details_calls(workflow) == []


def test_the_abandonment_written_before_a_crash_is_answered_again(workflow):
    challenged("chk_c11")
    clock.advance(settings().threeds_timeout_s + 1)
    assert sweeper.sweep()["redriven"] == 1
    work = work_of("chk_c11", "EUR", attempt=int(charge("chk_c11")["attempts"]))
    first = executor.execute(work)  # decided and written, then the run dies before finalize
    assert first.failure_code == "authentication_abandoned" and charge("chk_c11")["action_abandoned_at"]
    state = {**work.model_dump(), "charge": executor.execute(work).as_dict()}
    assert state["charge"] == first.as_dict()
    assert finalize.finalize(state)["charge_status"] == "FAILED"


def test_two_answers_racing_keep_the_first_and_the_abandonment_excludes_details(workflow):
    challenged("chk_c12")
    tables = PaymentTables.from_settings()
    action = charge("chk_c12")["next_action"]["action_id"]
    # two API calls that both read "no details" before writing: the conditional write keeps the first
    assert tables.record_psp_details("chk_c12#EUR", "adyen", {"threeDSResult": "a"}, "digest-a", action, clock.iso())
    assert tables.record_psp_details("chk_c12#EUR", "adyen", {"threeDSResult": "b"}, "digest-b", action,
                                     clock.iso()) is None
    assert charge("chk_c12")["psp_details"] == {"threeDSResult": "a"}
    # details for an action the charge does not show are not recorded
    assert tables.record_psp_details("chk_c12#EUR", "adyen", {"threeDSResult": "c"}, "digest-c", "other",
                                     clock.iso()) is None
    # and once details are recorded, the executor cannot write the abandonment of that action
    assert not tables.abandon_action("chk_c12#EUR", action, clock.iso())
    challenged("chk_c13")
    action = charge("chk_c13")["next_action"]["action_id"]
    assert tables.abandon_action("chk_c13#EUR", action, clock.iso())
    assert tables.record_psp_details("chk_c13#EUR", "adyen", {"threeDSResult": "a"}, "d", action, clock.iso()) is None


def test_details_adyen_refuses_fail_the_charge_and_a_re_run_answers_the_same_without_sending(workflow):
    challenged("chk_c14")
    assert send_details("chk_c14", {"threeDSResult": "bm90IGEgcmVzdWx0"})[0] == 202  # the API does not judge them
    assert sweeper.sweep()["redriven"] == 1
    work = work_of("chk_c14", "EUR", attempt=int(charge("chk_c14")["attempts"]))
    first = executor.execute(work)  # refused by Adyen (422), recorded; the run dies before finalize
    assert (first.outcome, first.failure_code) == ("failed", "adyen_sbx_details_invalid")
    workflow.sandbox.faults.push("http_500", match={"path": "/v71/payments/details"})  # a resend would meet this
    assert run_charge(work)["charge_status"] == "FAILED"
    assert {o["failure_code"] for o in orders_of("chk_c14")} == {"adyen_sbx_details_invalid"}
    assert workflow.sandbox.faults.clear_queued() == 1  # the re-run sent nothing
    assert [p["resultCode"] for p in adyen_payments(workflow, "chk_c14")] == ["ChallengeShopper"]


def test_a_refusal_of_details_an_earlier_run_may_have_sent_is_unknown_never_failed(workflow):
    from functions.shared.errors import PspOutcomeUnknown
    challenged("chk_c15")
    send_details("chk_c15", {"threeDSResult": "bm90IGEgcmVzdWx0"})
    stored = charge("chk_c15")
    # an earlier run sent them
    PaymentTables.from_settings().note_details_sent("chk_c15#EUR", stored["next_action"]["action_id"], clock.iso())
    assert sweeper.sweep()["redriven"] == 1
    with pytest.raises(PspOutcomeUnknown):
        executor.execute(work_of("chk_c15", "EUR", attempt=int(charge("chk_c15")["attempts"])))


def test_a_fingerprint_then_a_challenge_are_two_rounds_of_details_and_charge_once(workflow):
    # Given an issuer that fingerprints the browser first, then challenges
    fingerprint = challenged("chk_r1", holder="IDENTIFY")
    assert fingerprint["subtype"] == "fingerprint"
    first = {"threeDSResult": complete_challenge(fingerprint)}
    assert send_details("chk_r1", first)[0] == 202
    # When the re-drive sends the fingerprint's details, Adyen answers the challenge: shown in its place
    assert redrive("chk_r1") == {"charge_status": "EXECUTING", "psp_status": "requires_action"}
    challenge = shown("chk_r1")
    assert challenge["subtype"] == "challenge" and challenge["token"] != fingerprint["token"]
    assert [o["next_action"]["action"] for o in orders_of("chk_r1")] == [challenge] * 2
    assert sweeper.sweep()["redriven"] == 0  # waiting for the buyer again, not polled
    # the storefront's retry of the fingerprint's details is a replay, never taken for the challenge's, which stays
    # shown
    status, _, headers = send_details("chk_r1", first)
    assert status == 202 and headers.get("Idempotent-Replayed") == "true"
    assert charge("chk_r1")["psp_details"] == first and shown("chk_r1") == challenge
    # Then the challenge's details decide: one payment, SUCCESS
    assert send_details("chk_r1", {"threeDSResult": complete_challenge(challenge)})[0] == 202
    assert redrive("chk_r1")["charge_status"] == "SUCCESS"
    assert [p["resultCode"] for p in adyen_payments(workflow, "chk_r1")] == ["Authorised"]
    assert [o["payment_order_status"] for o in orders_of("chk_r1")] == ["SUCCESS", "SUCCESS"]
    invariants_hold()


def test_a_run_killed_before_the_second_action_was_recorded_shows_it_when_run_again(workflow):
    fingerprint = challenged("chk_r2", holder="IDENTIFY")
    send_details("chk_r2", {"threeDSResult": complete_challenge(fingerprint)})
    assert sweeper.sweep()["redriven"] == 1
    work = work_of("chk_r2", "EUR", attempt=int(charge("chk_r2")["attempts"]))
    died = executor.execute(work)  # Adyen answered the challenge; the run dies before finalize recorded it
    assert run_charge(work) == {"charge_status": "EXECUTING", "psp_status": "requires_action"}
    assert json.loads(died.adyen_action) == shown("chk_r2")  # the same challenge, replayed under the same key
    send_details("chk_r2", {"threeDSResult": complete_challenge(shown("chk_r2"), authenticated=False)})
    assert redrive("chk_r2")["charge_status"] == "FAILED"
    assert {o["failure_code"] for o in orders_of("chk_r2")} == {"3d_not_authenticated"}


def test_the_challenge_abandoned_after_the_fingerprint_fails_at_the_deadline(workflow):
    fingerprint = challenged("chk_r3", holder="IDENTIFY")
    send_details("chk_r3", {"threeDSResult": complete_challenge(fingerprint)})
    assert redrive("chk_r3")["charge_status"] == "EXECUTING"
    clock.advance(settings().threeds_timeout_s + 1)  # the first action's deadline: the whole flow's
    assert redrive("chk_r3")["charge_status"] == "FAILED"
    assert {o["failure_code"] for o in orders_of("chk_r3")} == {"authentication_abandoned"}
    assert [p["resultCode"] for p in adyen_payments(workflow, "chk_r3")] == ["ChallengeShopper"]


def test_shopper_actions_without_end_are_bounded(workflow, monkeypatch):
    # Adyen's answer to every details replaced at the library's edge by yet another challenge
    from Adyen.services.checkout import PaymentsApi

    rounds = iter(range(10))

    def another(self, request, idempotency_key=None, **_):
        class Answer:
            message = {"resultCode": "ChallengeShopper", "pspReference": charge("chk_r4")["psp_reference"],
                       "action": {"type": "threeDS2", "subtype": "challenge", "token": f"t{next(rounds)}"}}
        return Answer()

    monkeypatch.setattr(PaymentsApi, "payments_details", another)
    action = challenged("chk_r4")
    for n in range(executor.MAX_ACTION_ROUNDS - 1):
        send_details("chk_r4", {"threeDSResult": complete_challenge(action)})
        assert redrive("chk_r4")["charge_status"] == "EXECUTING", n
        action = shown("chk_r4")
    send_details("chk_r4", {"threeDSResult": complete_challenge(action)})
    assert redrive("chk_r4")["charge_status"] == "FAILED"
    assert {o["failure_code"] for o in orders_of("chk_r4")} == {"shopper_action_not_supported"}


def authorised_at_adyen(server, checkout_id, success="true"):
    """Adyen's signed AUTHORISATION of the checkout's payment (the buyer completed the action at Adyen, e.g. a
    redirect whose result never reached our API), through the receiver and the processor: their outcomes."""
    [payment] = adyen_payments(server, checkout_id)
    item = resigned({"amount": payment["amount"], "eventCode": "AUTHORISATION", "merchantAccountCode": MERCHANT_ACCOUNT,
                     "merchantReference": f"{checkout_id}#EUR", "pspReference": payment["pspReference"],
                     "reason": "", "success": success})
    notify(body_of(item))
    return processed()


def test_an_authorisation_heard_while_waiting_for_the_buyer_decides_and_no_abandonment_follows(workflow):
    challenged("chk_n1")
    assert authorised_at_adyen(workflow, "chk_n1") == ["redrive_due"]  # waiting for the buyer: brought forward
    clock.advance(settings().threeds_timeout_s + 1)  # even past the deadline, with no details ever posted
    assert redrive("chk_n1")["charge_status"] == "SUCCESS"  # Adyen's word, not an abandonment
    assert [o["payment_order_status"] for o in orders_of("chk_n1")] == ["SUCCESS", "SUCCESS"]
    assert "action_abandoned_at" not in charge("chk_n1")


def test_an_abandonment_that_adyen_then_says_it_authorised_is_for_a_human(workflow):
    challenged("chk_n2")
    clock.advance(settings().threeds_timeout_s + 1)
    assert sweeper.sweep()["redriven"] == 1
    work = work_of("chk_n2", "EUR", attempt=int(charge("chk_n2")["attempts"]))
    assert executor.execute(work).failure_code == "authentication_abandoned"  # written, then the run dies
    PaymentTables.from_settings().record_psp_notification(
        "chk_n2#EUR", {"outcome": "succeeded", "psp_reference": adyen_payments(workflow, "chk_n2")[0]["pspReference"],
                       "psp_status": "Authorised"}, clock.iso())
    with pytest.raises(PspOutcomeUnknown):  # decided FAILED, and Adyen authorised it: neither word is taken
        executor.execute(work)


def test_a_challenge_after_a_late_fingerprint_gets_its_own_deadline(workflow):
    fingerprint = challenged("chk_n3", holder="IDENTIFY")
    first_deadline = charge("chk_n3")["action_expires_at"]
    clock.advance(settings().threeds_timeout_s - 120)  # the fingerprint's details come 2 minutes before its deadline
    assert send_details("chk_n3", {"threeDSResult": complete_challenge(fingerprint)})[0] == 202
    clock.advance(121)
    assert redrive("chk_n3") == {"charge_status": "EXECUTING", "psp_status": "requires_action"}
    challenge = shown("chk_n3")
    assert challenge["subtype"] == "challenge"
    assert charge("chk_n3")["action_expires_at"] > clock.iso() > first_deadline  # a whole window for the challenge
    assert send_details("chk_n3", {"threeDSResult": complete_challenge(challenge)})[0] == 202
    assert redrive("chk_n3")["charge_status"] == "SUCCESS"


def test_a_run_that_read_the_charge_before_the_details_does_not_show_the_answered_action_again(workflow):
    action = challenged("chk_n4")
    tables = PaymentTables.from_settings()
    clock.advance(60)
    key = "chk_n4#EUR"
    stored = tables.get_charge(key)
    assert tables.begin_charge_attempt(key, 2, clock.iso(), clock.iso(), expected_due_at=stored["due_at"])
    work = work_of("chk_n4", "EUR", attempt=2)
    state = {**work.model_dump(), "charge": executor.execute(work).as_dict()}  # pending: the same action
    assert send_details("chk_n4", {"threeDSResult": complete_challenge(action)})[0] == 202  # meanwhile
    finalize.handler(state, FakeContext())  # the stale run's finalize
    assert all(o.get("next_action") is None for o in orders_of("chk_n4"))  # not shown again
    assert charge("chk_n4")["due_at"] <= clock.iso()  # and still due now: the details decide at the next sweep
    assert redrive("chk_n4")["charge_status"] == "SUCCESS"


@pytest.mark.parametrize(("details", "status"), [
    ({"threeds2.challengeResult": "eyJ0cmFuc1N0YXR1cyI6IlkifQ=="}, 202),  # an older component's dotted name
    ({"threeDSResult": "caf\u00e9"}, 422),  # Adyen's values are printable ASCII
    ({f"k{n}": "x" * 20_000 for n in range(4)}, 413)])  # 80,000 characters: past the API's 64 KB body limit
def test_details_names_and_sizes(workflow, details, status):
    challenged("chk_n5")
    assert send_details("chk_n5", details)[0] == status


def test_a_redirect_is_shown_answered_with_its_redirect_result_and_charged_once(workflow):
    # Given a card Adyen sends to the redirect flow (the sandbox's REDIRECT holder): the orders show the redirect
    action = challenged("chk_d1", holder="REDIRECT")
    assert action["type"] == "redirect" and action["url"].startswith("https://")
    # a threeDSResult does not answer a redirect: refused by the API, nothing recorded, the charge still waits
    status, body, _ = send_details("chk_d1", {"threeDSResult": complete_challenge({"token": "t"})})
    assert (status, body["error"]["code"]) == (422, "details_not_for_action")
    assert "psp_details" not in charge("chk_d1") and shown("chk_d1") == action
    # When the buyer comes back from the issuer's page with redirectResult and the storefront posts it
    assert send_details("chk_d1", {"redirectResult": complete_redirect(action)})[0] == 202
    # Then the re-drive sends it to /payments/details: SUCCESS, one payment at Adyen
    assert redrive("chk_d1")["charge_status"] == "SUCCESS"
    [payment] = adyen_payments(workflow, "chk_d1")
    assert payment["resultCode"] == "Authorised"
    assert payment["returnUrl"] == RETURN_URL  # the buyer came back to the storefront's page, as it asked
    assert [o["payment_order_status"] for o in orders_of("chk_d1")] == ["SUCCESS", "SUCCESS"]
    invariants_hold()


def test_a_redirect_the_buyer_fails_ends_failed_with_adyens_reason(workflow):
    action = challenged("chk_d2", holder="REDIRECT")
    assert send_details("chk_d2", {"redirectResult": complete_redirect(action, authenticated=False)})[0] == 202
    assert redrive("chk_d2")["charge_status"] == "FAILED"
    assert {(o["payment_order_status"], o["failure_code"]) for o in orders_of("chk_d2")} == {
        ("FAILED", "3d_not_authenticated")}
    assert [p["resultCode"] for p in adyen_payments(workflow, "chk_d2")] == ["Refused"]


@pytest.mark.parametrize("details", [{"redirectResult": "eyJ4IjoieSJ9"}, {"MD": "x"}, {"PaRes": "y"}])
def test_details_without_the_fields_that_answer_the_action_are_refused_before_recording(workflow, details):
    action = challenged("chk_d3")  # a native challenge: answered with threeDSResult (or an older component's names)
    status, body, _ = send_details("chk_d3", details)
    assert (status, body["error"]["code"]) == (422, "details_not_for_action")
    assert "threeDSResult" in body["error"]["message"]
    assert "psp_details" not in charge("chk_d3")
    # the buyer's right answer is still taken, and decides
    assert send_details("chk_d3", {"threeDSResult": complete_challenge(action)})[0] == 202
    assert redrive("chk_d3")["charge_status"] == "SUCCESS"


def test_without_the_buyers_browser_a_challenged_card_takes_adyens_redirect_flow(workflow):
    # the storefront sent no adyen_browser: nothing asks for native 3-D Secure 2, and Adyen redirects the buyer
    action = challenged("chk_d4", browser=None)
    assert action["type"] == "redirect"
    assert "adyen_browser" not in charge("chk_d4")
    assert send_details("chk_d4", {"redirectResult": complete_redirect(action)})[0] == 202
    assert redrive("chk_d4")["charge_status"] == "SUCCESS"


def test_the_buyers_browser_is_kept_on_the_charge_only_until_it_is_final(workflow):
    action = challenged("chk_d5")
    assert action["type"] == "threeDS2"
    stored = charge("chk_d5")
    assert json.loads(stored["adyen_browser"]) == BROWSER
    assert all("adyen_browser" not in o and "adyen_browser" not in json.dumps(o) for o in orders_of("chk_d5"))
    assert send_details("chk_d5", {"threeDSResult": complete_challenge(action)})[0] == 202
    assert redrive("chk_d5")["charge_status"] == "SUCCESS"
    assert "adyen_browser" not in charge("chk_d5")


@pytest.mark.parametrize(("method", "code"), [
    ({"token": "pm_card_visa", "adyen_browser": BROWSER}, "adyen_browser_not_allowed"),
    ({"adyen": challenge_card(), "adyen_browser": BROWSER | {"origin": "http://shop.example"}},
     "invalid_format"),
    ({"adyen": challenge_card(), "adyen_browser": {"origin": "https://shop.example"}}, "missing")])
def test_a_browser_without_an_adyen_card_or_malformed_is_refused(workflow, method, code):
    status, body = post("chk_d6", **method)
    assert status == 422 and code in json.dumps(body), body
    assert charge("chk_d6") is None


def shown_id(checkout_id):
    answer = api.handler(http_event("GET", f"/v1/checkouts/{checkout_id}"), FakeContext())
    return json.loads(answer["body"])["next_action"]["action_id"]


def test_an_answer_naming_a_superseded_action_is_refused_and_the_shown_one_still_decides(workflow):
    # Given a fingerprint answered, then replaced by the challenge
    fingerprint = challenged("chk_d7", holder="IDENTIFY")
    fingerprint_id = shown_id("chk_d7")
    answered = {"threeDSResult": complete_challenge(fingerprint)}
    assert send_details("chk_d7", answered, action_id=fingerprint_id)[0] == 202
    assert redrive("chk_d7") == {"charge_status": "EXECUTING", "psp_status": "requires_action"}
    challenge, challenge_id = shown("chk_d7"), shown_id("chk_d7")
    assert challenge_id != fingerprint_id
    # When a second tab posts other details for the fingerprint, naming it: refused, nothing recorded for the challenge
    stale = {"threeDSResult": "c3RhbGUgdGFi"}  # other details than the fingerprint's first answer
    status, body, _ = send_details("chk_d7", stale, action_id=fingerprint_id)
    assert (status, body.get("error", {}).get("code")) == (409, "action_superseded"), body
    assert charge("chk_d7").get("psp_details_for") != challenge_id
    # Then the challenge's answer, naming it, decides
    assert send_details("chk_d7", {"threeDSResult": complete_challenge(challenge)}, action_id=challenge_id)[0] == 202
    assert redrive("chk_d7")["charge_status"] == "SUCCESS"


@pytest.mark.parametrize(("holder", "browser", "details"), [
    ("IDENTIFY", BROWSER, {"threeds2.fingerprint": "eyJ0aHJlZURTQ29tcEluZCI6IlkifQ=="}),
    ("J Smith", None, {"payload": "Ab02b4c0"}),
    ("J Smith", None, {"returnUrlQueryString": "redirectResult=X"}),
    ("J Smith", None, {"MD": "Ab02b4c0", "PaRes": "BQABAgA"})])
def test_each_of_adyens_answer_fields_for_the_action_is_taken(workflow, holder, browser, details):
    challenged("chk_d8", holder=holder, browser=browser)
    assert send_details("chk_d8", details)[0] == 202
    assert charge("chk_d8")["psp_details"] == details


def test_wrong_fields_for_an_expired_action_get_the_same_answer_as_right_ones(workflow):
    action = challenged("chk_d9")
    clock.advance(settings().threeds_timeout_s + 1)
    wrong = send_details("chk_d9", {"redirectResult": "x"})
    right = send_details("chk_d9", {"threeDSResult": complete_challenge(action)})
    assert wrong[0] == right[0] == 409 and wrong[1]["error"]["code"] == right[1]["error"]["code"] == "no_action_pending"


def test_a_redirect_abandoned_at_its_deadline_then_authorised_by_adyen_goes_to_a_human_and_the_books_stay(workflow):
    # Given a buyer sent to the issuer's page (redirect) who never comes back: at the deadline, FAILED, no call
    challenged("chk_d5", holder="REDIRECT")
    clock.advance(settings().threeds_timeout_s + 1)
    assert redrive("chk_d5")["charge_status"] == "FAILED"
    assert {o["failure_code"] for o in orders_of("chk_d5")} == {"authentication_abandoned"}
    assert details_calls(workflow) == []
    # When Adyen later signs an AUTHORISATION for that payment (the buyer finished on the issuer's page after all)
    assert authorised_at_adyen(workflow, "chk_d5") == ["review"]
    # Then a human is asked, the message naming the charge, its orders and Adyen's payment
    [review] = [json.loads(b) for b in drain(settings().review_queue_url)]
    [payment] = adyen_payments(workflow, "chk_d5")
    assert (review["category"], review["charge_key"], review["psp_reference"]) == (
        "charge_succeeded_recorded_failed", "chk_d5#EUR", payment["pspReference"])
    assert sorted(review["payment_order_ids"]) == sorted(o["payment_order_id"] for o in orders_of("chk_d5"))
    # and our books are not moved by it: FAILED, no wallet credit, no ledger entry (the invariants hold)
    assert charge("chk_d5")["charge_status"] == "FAILED"
    assert {o["payment_order_status"] for o in orders_of("chk_d5")} == {"FAILED"}
    invariants_hold()
    # Adyen redelivering it (the same event) is a duplicate: no second message, nothing moved
    assert authorised_at_adyen(workflow, "chk_d5") == ["duplicate"]
    assert drain(settings().review_queue_url) == []
    assert charge("chk_d5")["charge_status"] == "FAILED"
