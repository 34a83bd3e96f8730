"""The executor against the PSP sandbox (the unmodified stripe SDK) and moto: one PaymentIntent per charge,
outcomes, and which answers may end FAILED (only a decline or an invalid request; never an unclear one)."""

import time
from datetime import timedelta

import boto3
import pytest

from functions.executor import handler as executor
from functions.shared import clock, psp
from functions.shared.config import reload_settings
from functions.shared.errors import PspOutcomeUnknown, PspPermanentError, PspTransientError
from functions.shared.tables import PaymentTables
from tests.integration.support import place, work_of
from tests.support.events import FakeContext, load


def started(checkout_id="chk_1", card="pm_card_visa", **place_options):
    """A placed checkout whose USD charge has begun attempt 1, as the starter leaves it."""
    place(checkout_id, card=card, **place_options)
    key = f"{checkout_id}#USD"
    PaymentTables.from_settings().begin_charge_attempt(key, 1, clock.iso(), clock.iso())
    return work_of(checkout_id)


def intents_of(server, checkout_id):
    return [c for c in server.charges() if c["metadata"].get("checkout_id") == checkout_id]


def execute_until_answered(work, attempts=3):
    """What the workflow's Retry does: run again with the same input while the error is transient."""
    for _ in range(attempts - 1):
        try:
            return executor.execute(work)
        except PspTransientError:
            continue
    return executor.execute(work)


def test_sample_event_charges_the_sum_once_with_the_charge_contract(sandbox):
    place("chk_sample_1", orders=(("seller_books", "12.34", "USD"), ("seller_tea", "5.00", "USD")))
    PaymentTables.from_settings().begin_charge_attempt("chk_sample_1#USD", 1, clock.iso(), clock.iso())
    event = load("task_charge.json")
    event["first_attempt_at"] = clock.iso()
    result = executor.handler(event, FakeContext())
    assert result["outcome"] == "succeeded" and result["psp_reference"].startswith("pi_")
    assert result["charge_id"].startswith("ch_")
    [charge] = intents_of(sandbox, "chk_sample_1")
    assert (charge["amount"], charge["currency"], charge["status"]) == (1734, "usd", "succeeded")
    assert charge["metadata"] == {"checkout_id": "chk_sample_1", "charge_key": "chk_sample_1#USD"}
    assert charge["idempotency_key"] == "charge:chk_sample_1:USD"
    intent = sandbox.state.payment_intent(result["psp_reference"])
    assert intent.transfer_group == "chk_sample_1"
    stored = PaymentTables.from_settings().get_charge("chk_sample_1#USD")
    assert stored["psp_reference"] == result["psp_reference"] and stored["psp_calls"] == 1


def test_running_twice_charges_once_and_the_second_run_reads_the_known_intent(sandbox):
    work = started()
    first = executor.execute(work)
    second = executor.execute(work)
    assert first == second
    assert len(intents_of(sandbox, "chk_1")) == 1


@pytest.mark.parametrize(("card", "code"), [
    ("pm_card_chargeDeclined", "generic_decline"),
    ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ("pm_card_chargeDeclinedLostCard", "lost_card"),
])
def test_a_decline_is_a_failed_outcome_with_its_code(sandbox, card, code):
    result = executor.execute(started(card=card))
    assert (result.outcome, result.failure_code) == ("failed", code)
    assert result.failure_reason


@pytest.mark.parametrize(("card", "status"), [("pm_card_processing", "processing"),
                                               ("pm_card_authenticationRequired", "requires_action")])
def test_undecided_charges_stay_pending_and_a_redrive_reads_the_current_state(sandbox, card, status):
    work = started(card=card)
    result = executor.execute(work)
    assert (result.outcome, result.psp_status) == ("pending", status)
    sandbox.state.resolve_payment_intent(result.psp_reference, "succeeded")
    assert executor.execute(work.model_copy(update={"attempt": 2})).outcome == "succeeded"
    assert len(intents_of(sandbox, "chk_1")) == 1


def test_an_unknown_payment_method_is_permanent(sandbox):
    with pytest.raises(PspPermanentError):
        executor.execute(started(card="pm_card_doesNotExist"))


@pytest.mark.parametrize("kind", ["http_500", "http_502", "http_503", "connection_reset"])
def test_transient_faults_are_retried_and_the_retry_charges_once(sandbox, kind):
    sandbox.faults.push(kind, match={"idempotency_key": "charge:chk_1:USD"})
    work = started()
    with pytest.raises(PspTransientError):
        executor.execute(work)
    assert executor.execute(work).outcome == "succeeded"  # a look-up first, then the same key
    assert [c["status"] for c in intents_of(sandbox, "chk_1")] == ["succeeded"]


def test_a_429_is_waited_out_inside_the_call_and_the_charge_is_made_once(sandbox):
    # Given Stripe's rate limiter refuses the charge's create twice (a 429 is never executed by Stripe)
    sandbox.faults.push("rate_limit", match={"idempotency_key": "charge:chk_1:USD"}, times=2)
    # Then one call of the executor ends the charge right: the same request is sent again after a backoff
    assert executor.execute(started()).outcome == "succeeded"
    assert sandbox.faults.stats()["injected"]["rate_limit"] == 2
    assert [c["status"] for c in intents_of(sandbox, "chk_1")] == ["succeeded"]


def test_a_429_that_outlasts_the_wait_is_transient_never_a_failure(sandbox, monkeypatch):
    monkeypatch.setenv("PSP_RATE_LIMIT_WAIT_S", "1.6")
    reload_settings()
    psp.reset_client()
    sandbox.faults.push("rate_limit", match={"idempotency_key": "charge:chk_1:USD"}, times=100)
    work = started()
    with pytest.raises(PspTransientError):  # the workflow's Retry tries again later; nothing is FAILED
        executor.execute(work)
    # the sandbox says Retry-After: 1, the least wait: one wait of 1 s fits in 1.6 s, a second does not
    assert sandbox.faults.stats()["injected"]["rate_limit"] == 2
    sandbox.faults.clear_queued()
    assert executor.execute(work).outcome == "succeeded"  # the PSP's limit has passed: a look-up, then the create
    assert [c["status"] for c in intents_of(sandbox, "chk_1")] == ["succeeded"]


def test_the_backoff_is_jittered_doubling_and_never_below_retry_after():
    assert all(0.25 <= psp.rate_limit_backoff_s(0, None) <= 0.375 for _ in range(50))
    assert psp.rate_limit_backoff_s(2, "5") == 5.0  # Retry-After is the least wait
    assert all(2.0 <= psp.rate_limit_backoff_s(3, "1") <= 3.0 for _ in range(50))
    assert 0.5 <= psp.rate_limit_backoff_s(1, "soon") <= 0.75
    # a Retry-After of 0 (or nonsense) never makes a wait of 0: the wait budget always ends the loop
    assert all(psp.rate_limit_backoff_s(0, value) >= 0.25 for value in ("0", "-3", "nan", "inf") for _ in range(20))


@pytest.mark.parametrize("status", ["http_500", "http_503"])
def test_a_5xx_saying_do_not_retry_is_still_not_a_failure(sandbox, status):
    sandbox.faults.push(status, match={"idempotency_key": "charge:chk_1:USD"}, should_retry=False)
    work = started()
    with pytest.raises(PspTransientError):
        executor.execute(work)
    assert executor.execute(work).outcome == "succeeded"


def test_a_charge_whose_answer_was_lost_is_found_not_repeated(sandbox):
    sandbox.faults.push("lost_response", match={"idempotency_key": "charge:chk_1:USD"}, times=2)
    result = execute_until_answered(started())
    assert result.outcome == "succeeded"
    assert sandbox.faults.stats()["injected"]["lost_response"] >= 1
    assert len(intents_of(sandbox, "chk_1")) == 1


def test_past_the_key_lifetime_the_charge_is_looked_up_not_repeated(sandbox):
    work = started().model_copy(update={"first_attempt_at": clock.iso()})
    sandbox.faults.push("lost_response", match={"idempotency_key": "charge:chk_1:USD"})
    with pytest.raises(PspTransientError):
        psp.PspClient("sk_test_local", sandbox.url).charge(work)
    assert len(intents_of(sandbox, "chk_1")) == 1  # charged, answer lost
    sandbox.advance_clock(25 * 3600)  # Stripe prunes the key
    clock.advance(timedelta(hours=25).total_seconds())
    assert psp.PspClient("sk_test_local", sandbox.url).charge(work).outcome == "succeeded"
    assert len(intents_of(sandbox, "chk_1")) == 1


def test_a_stored_500_is_retried_then_the_key_is_retired_once_a_look_up_proves_nothing_was_made(sandbox):
    # Given Stripe stored a 500 for the charge's key (it replays it for 24 h)
    sandbox.faults.push("http_500", match={"idempotency_key": "charge:chk_1:USD"}, stored=True)
    work = started()
    with pytest.raises(PspTransientError):
        executor.execute(work)
    # When the replay comes back before the search can be trusted: still only "try again later"
    with pytest.raises(PspTransientError):
        executor.execute(work)
    assert intents_of(sandbox, "chk_1") == []
    # Then, minutes later, the look-up proves no PaymentIntent exists and the next generation's key charges
    clock.advance(psp.SEARCH_TRUSTED_AFTER.total_seconds() + 1)
    result = executor.execute(work.model_copy(update={"attempt": 2}))
    assert result.outcome == "succeeded"
    [charge] = intents_of(sandbox, "chk_1")
    assert charge["idempotency_key"] == "charge:chk_1:USD:g1"
    assert PaymentTables.from_settings().get_charge("chk_1#USD")["key_generation"] == 1
    assert executor.execute(work).outcome == "succeeded"  # and again: nothing new
    assert len(intents_of(sandbox, "chk_1")) == 1


def test_the_wait_before_trusting_a_search_counts_from_the_poisoned_create_not_the_first_attempt(sandbox):
    # Given a charge whose first attempt was half an hour ago (earlier attempts died before creating anything)
    work = started()
    clock.advance(30 * 60)
    # When its create now gets a 500 that Stripe stores and replays for the key
    sandbox.faults.push("http_500", match={"idempotency_key": "charge:chk_1:USD"}, stored=True)
    with pytest.raises(PspTransientError):
        executor.execute(work)
    # Then the replay seconds later is "try again later", not a search trusted at once and a new key: a
    # PaymentIntent made by the poisoned create would not be searchable yet, and a new key would charge twice
    with pytest.raises(PspTransientError):
        executor.execute(work)
    assert "key_generation" not in PaymentTables.from_settings().get_charge("chk_1#USD")
    clock.advance(psp.SEARCH_TRUSTED_AFTER.total_seconds() + 1)
    assert executor.execute(work).outcome == "succeeded"
    assert [c["idempotency_key"] for c in intents_of(sandbox, "chk_1")] == ["charge:chk_1:USD:g1"]


def test_a_create_refused_after_an_earlier_call_is_unknown_never_failed(sandbox):
    # Given a first call that never got an answer (it may have charged, spending a single-use token)
    sandbox.faults.push("connection_reset", match={"idempotency_key": "charge:chk_1:USD"})
    work = started(card="pm_card_doesNotExist")
    with pytest.raises(PspTransientError):
        executor.execute(work)
    # When the retry's create is refused (as a spent token would be)
    # Then the outcome is unknown (dead letter, a human looks), never a FAILED order that might have been paid
    with pytest.raises(PspOutcomeUnknown):
        executor.execute(work)


def test_a_rotated_key_is_an_unclear_answer_and_the_next_try_reads_the_new_key(sandbox, monkeypatch):
    # Given the key in SSM was revoked (401 at the PSP), then replaced by on-call
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/marketpay/stripe/secret-key", Value="sk_live_revoked", Type="SecureString")
    monkeypatch.delenv("PSP_API_KEY")
    monkeypatch.setenv("PSP_API_KEY_PARAMETER", "/marketpay/stripe/secret-key")
    reload_settings()
    psp.reset_client()
    work = started()
    with pytest.raises(PspTransientError):  # never FAILED
        executor.execute(work)
    ssm.put_parameter(Name="/marketpay/stripe/secret-key", Value="sk_test_rotated", Type="SecureString",
                      Overwrite=True)
    # When the workflow retries: the 401 made the next read skip the five-minute cache
    assert executor.execute(work).outcome == "succeeded"
    assert psp.client().api_key == "sk_test_rotated"
    assert len(intents_of(sandbox, "chk_1")) == 1


def test_the_client_is_rebuilt_when_the_configured_key_changes(sandbox, monkeypatch):
    first = psp.client()
    assert psp.client() is first
    monkeypatch.setenv("PSP_API_KEY", "sk_test_next")
    reload_settings()
    assert psp.client() is not first and psp.client().api_key == "sk_test_next"


def test_a_key_changed_in_ssm_is_used_once_its_cache_ages_out(sandbox, monkeypatch):
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/marketpay/stripe/secret-key", Value="sk_test_first", Type="SecureString")
    monkeypatch.setenv("PSP_API_KEY_PARAMETER", "/marketpay/stripe/secret-key")
    reload_settings()
    psp.reset_client()
    assert psp.client().api_key == "sk_test_first"
    ssm.put_parameter(Name="/marketpay/stripe/secret-key", Value="sk_test_second", Type="SecureString",
                      Overwrite=True)
    assert psp.client().api_key == "sk_test_first"  # within its five minutes, the cached value
    psp._ssm().clear_cache()  # what max_age=300 does five minutes later
    assert psp.client().api_key == "sk_test_second"


def test_a_look_up_the_psp_refuses_is_never_a_failure(sandbox):
    # Given a charge whose recorded PaymentIntent the PSP does not know (404: another account's key, say)
    work = started()
    PaymentTables.from_settings().record_psp_reference("chk_1#USD", "pi_unknownToThisAccount", clock.iso())
    # Then the outcome is unknown (the workflow dead-letters it for a human), never a FAILED order
    with pytest.raises(PspOutcomeUnknown):
        executor.execute(work)
    assert intents_of(sandbox, "chk_1") == []  # and nothing was created blindly


def test_a_call_without_time_left_in_the_invocation_is_not_sent(sandbox):
    # Given the invocation has less than MIN_CALL_S left once the margin for the DynamoDB writes is kept
    work = started()
    before = sandbox.faults.stats()["requests"]
    with psp.calls_within(int((psp.DEADLINE_MARGIN_S + 0.5) * 1000)), pytest.raises(PspTransientError):
        executor.execute(work)
    # Then nothing reached the PSP, and the workflow's next try (a whole invocation) charges once
    assert sandbox.faults.stats()["requests"] == before
    assert executor.execute(work).outcome == "succeeded"
    assert [c["status"] for c in intents_of(sandbox, "chk_1")] == ["succeeded"]


def test_a_slow_psp_times_out_before_the_invocation_does(sandbox):
    # Given the PSP answers the charge's create 7 s late and the invocation has 2 s left for its calls
    sandbox.faults.push("latency", match={"idempotency_key": "charge:chk_1:USD"}, delay_ms=7000)
    work = started()
    begun = time.monotonic()
    with psp.calls_within(int((psp.DEADLINE_MARGIN_S + 2) * 1000)), pytest.raises(PspTransientError):
        executor.execute(work)
    # Then the call was cut at the deadline, not at the configured 8 s timeout: a transient error, retried
    waited = time.monotonic() - begun
    assert waited < 6, waited
    time.sleep(7.5 - waited)  # the late answer lands at the PSP: the retry finds that PaymentIntent, never a second
    assert executor.execute(work).outcome == "succeeded"
    assert [c["status"] for c in intents_of(sandbox, "chk_1")] == ["succeeded"]
