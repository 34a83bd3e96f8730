"""The executor against the PSP sandbox, spoken to by the unmodified stripe SDK: outcomes and failure kinds."""

from datetime import timedelta

import pytest

from functions.executor import handler as executor
from functions.shared import clock, psp
from functions.shared.errors import PspPermanentError, PspTransientError
from functions.shared.models import OrderWork
from psp_sandbox.server import start_sandbox
from tests.support.events import FakeContext, load


@pytest.fixture
def sandbox(monkeypatch):
    server = start_sandbox(port=0)
    monkeypatch.setenv("PSP_API_BASE", server.url)
    monkeypatch.setenv("PSP_API_KEY", "sk_test_local")
    for name in ("PAYMENT_EVENTS_TABLE", "PAYMENT_ORDERS_TABLE", "WALLET_TABLE", "LEDGER_TABLE"):
        monkeypatch.setenv(name, "unused")
    from functions.shared.config import reload_settings

    reload_settings()
    psp.reset_client()
    yield server
    server.stop()
    psp.reset_client()
    clock.reset()


def work(order_id="po_1", payment_method="pm_card_visa", **changes):
    changes.setdefault("first_attempt_at", clock.iso())
    return OrderWork(payment_order_id=order_id, checkout_id="chk_1", seller_account="seller_a", amount_minor=1234,
                     currency="USD", payment_method=payment_method, **changes)


def execute_until_answered(order, attempts=3):
    """What the workflow's Retry does: run again with the same key while the error is transient."""
    for _ in range(attempts - 1):
        try:
            return executor.execute(order)
        except PspTransientError:
            continue
    return executor.execute(order)


def charges_of(server, order_id):
    return [c for c in server.charges() if c["metadata"].get("payment_order_id") == order_id]


def test_sample_event_charges_once_with_our_metadata(sandbox):
    event = load("task_charge.json")
    event["first_attempt_at"] = clock.iso()
    result = executor.handler(event, FakeContext())
    assert result["outcome"] == "succeeded" and result["psp_reference"].startswith("pi_")
    [charge] = charges_of(sandbox, "po_sample_1")
    assert charge["amount"] == 1234 and charge["currency"] == "usd" and charge["status"] == "succeeded"
    assert charge["metadata"]["checkout_id"] == "chk_sample_1"
    assert charge["idempotency_key"] == "po_sample_1"


def test_running_twice_charges_once(sandbox):
    first = executor.execute(work())
    second = executor.execute(work())
    assert first == second
    assert len(charges_of(sandbox, "po_1")) == 1


@pytest.mark.parametrize(("card", "code"), [
    ("pm_card_chargeDeclined", "generic_decline"),
    ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ("pm_card_chargeDeclinedLostCard", "lost_card"),
    ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
])
def test_a_decline_is_a_failed_outcome_with_its_code(sandbox, card, code):
    result = executor.execute(work(payment_method=card))
    assert (result.outcome, result.failure_code) == ("failed", code)
    assert result.failure_reason


@pytest.mark.parametrize(("card", "status"), [("pm_card_processing", "processing"),
                                               ("pm_card_authenticationRequired", "requires_action")])
def test_undecided_charges_stay_pending(sandbox, card, status):
    result = executor.execute(work(payment_method=card))
    assert (result.outcome, result.psp_status) == ("pending", status)
    # a re-drive reads the current state instead of replaying the first answer
    sandbox.state.resolve_payment_intent(result.psp_reference, "succeeded")
    assert executor.execute(work(payment_method=card, psp_reference=result.psp_reference)).outcome == "succeeded"


def test_an_unknown_payment_method_is_permanent(sandbox):
    with pytest.raises(PspPermanentError):
        executor.execute(work(payment_method="pm_card_doesNotExist"))


@pytest.mark.parametrize("kind", ["http_500", "http_502", "http_503", "rate_limit", "connection_reset"])
def test_transient_faults_raise_a_retryable_error_and_the_retry_charges_once(sandbox, kind):
    # two faults in a row (the SDK's own network retry may meet the second one)
    sandbox.faults.push(kind, match={"idempotency_key": "po_t"}, times=2)
    with pytest.raises(PspTransientError):
        executor.execute(work("po_t"))
    outcomes = []
    for _ in range(2):  # the workflow's retry, with the same key
        try:
            outcomes.append(executor.execute(work("po_t")).outcome)
            break
        except PspTransientError:
            outcomes.append("transient")
    assert outcomes[-1] == "succeeded"
    assert len([c for c in charges_of(sandbox, "po_t") if c["status"] == "succeeded"]) == 1


def test_should_retry_false_is_permanent(sandbox):
    sandbox.faults.push("http_500", match={"idempotency_key": "po_n"}, should_retry=False, times=2)
    with pytest.raises(PspPermanentError):
        executor.execute(work("po_n"))


def test_a_charge_whose_answer_was_lost_is_replayed_not_repeated(sandbox):
    sandbox.faults.push("lost_response", match={"idempotency_key": "po_l"}, times=2)
    result = execute_until_answered(work("po_l"))
    assert result.outcome == "succeeded"
    assert sandbox.faults.stats()["injected"]["lost_response"] >= 1
    assert len(charges_of(sandbox, "po_l")) == 1


def test_past_the_key_lifetime_the_charge_is_looked_up_not_repeated(sandbox):
    first_attempt = clock.iso()
    sandbox.faults.push("lost_response", match={"idempotency_key": "po_x"}, times=2)
    with pytest.raises(PspTransientError):
        psp.PspClient("sk_test_local", sandbox.url, max_network_retries=0).charge(
            work("po_x", first_attempt_at=first_attempt))
    assert len(charges_of(sandbox, "po_x")) == 1  # charged, answer lost
    sandbox.advance_clock(25 * 3600)  # Stripe prunes the key
    clock.advance(timedelta(hours=25).total_seconds())
    result = executor.execute(work("po_x", first_attempt_at=first_attempt))
    assert result.outcome == "succeeded"
    assert len(charges_of(sandbox, "po_x")) == 1
