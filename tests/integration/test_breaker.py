"""The PSPs' circuit breakers (functions/shared/breaker.py): shared through DynamoDB, opened by failures in a window,
one probe at a time once the wait is over, closed by an answer; forced by an operator."""

import threading

import pytest

from functions.shared import breaker as breakers
from functions.shared import clock
from functions.shared.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from functions.shared.tables import PspHealthTable


@pytest.fixture
def table(aws_env):
    return PspHealthTable.from_settings()


def fresh(table, **limits):
    """A breaker as another process (or another instance) has it: its own cache."""
    return Breaker(table, **{"failures": 3, "window_s": 30, "cooldown_s": 60, **limits})


def fail(breaker, times, psp="stripe"):
    for _ in range(times):
        breaker.failed(psp, "APIConnectionError: connection refused")


def test_a_healthy_psp_is_read_and_never_written(table):
    breaker = fresh(table)
    assert breaker.allows("stripe")
    breaker.succeeded("stripe")
    assert table.get("stripe") == {}
    assert breaker.view("stripe").state == CLOSED


def test_failures_within_the_window_open_it_for_every_process(table):
    one, other = fresh(table), fresh(table)
    fail(one, 2)
    assert other.allows("stripe")  # 2 of 3: still closed
    fail(one, 1)
    assert table.get("stripe")["state"] == OPEN
    assert not fresh(table).allows("stripe")  # another instance, its first read
    view = fresh(table).view("stripe")
    assert (view.state, view.trips) == (OPEN, 1) and "connection refused" in view.last_failure
    assert fresh(table).allows("adyen")  # one breaker per PSP


def test_failures_spread_beyond_the_window_never_open_it(table):
    breaker = fresh(table)
    fail(breaker, 2)
    clock.advance(31)
    fail(breaker, 2)  # a new window: 2, not 4
    assert table.get("stripe").get("state") != OPEN
    assert int(table.get("stripe")["failures"]) == 2


def test_an_answer_closes_it_and_forgets_the_failures(table):
    breaker = fresh(table)
    fail(breaker, 2)
    breaker.succeeded("stripe")
    fail(breaker, 2)  # counting again from 0
    assert fresh(table).allows("stripe")
    assert int(table.get("stripe")["failures"]) == 2


def test_after_the_wait_one_caller_probes_and_the_others_wait(table):
    fail(fresh(table), 3)
    clock.advance(61)
    assert fresh(table).view("stripe").state == HALF_OPEN
    callers = [fresh(table) for _ in range(8)]
    answers = []
    threads = [threading.Thread(target=lambda b=b: answers.append(b.allows("stripe"))) for b in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * 7 + [True]


def test_a_failed_probe_opens_it_for_another_wait_and_a_good_one_closes_it(table):
    fail(fresh(table), 3)
    clock.advance(61)
    prober = fresh(table)
    assert prober.allows("stripe")
    prober.failed("stripe", "HTTP 503")
    assert not fresh(table).allows("stripe")
    assert fresh(table).view("stripe").trips == 2
    clock.advance(61)
    prober = fresh(table)
    assert prober.allows("stripe")
    prober.succeeded("stripe")
    assert fresh(table).allows("stripe") and fresh(table).view("stripe").state == CLOSED


def test_a_failure_while_open_and_waiting_extends_nothing(table):
    breaker = fresh(table)
    fail(breaker, 3)
    until = table.get("stripe")["open_until"]
    clock.advance(10)
    fail(fresh(table), 2)  # calls sent before it opened, answering late
    assert table.get("stripe")["open_until"] == until


def test_a_dead_prober_frees_its_lease_after_it(table):
    fail(fresh(table), 3)
    clock.advance(61)
    assert fresh(table).allows("stripe")  # then the process dies: no answer recorded
    assert not fresh(table).allows("stripe")
    clock.advance(breakers.PROBE_LEASE_S + 1)
    assert fresh(table).allows("stripe")


def test_each_process_reads_a_psp_once_per_cache_period(table, monkeypatch):
    breaker = fresh(table)
    reads = []
    get = table.get
    monkeypatch.setattr(table, "get", lambda psp: reads.append(psp) or get(psp))
    for _ in range(20):
        assert breaker.allows("stripe")
        breaker.succeeded("stripe")
    assert reads == ["stripe"]


def test_an_operator_opens_it_for_a_maintenance_and_closes_it(table):
    operator = fresh(table)
    view = operator.force("stripe", OPEN, minutes=30, by="ops")
    assert view.state == OPEN and view.open_until > clock.iso()
    assert not fresh(table).allows("stripe")
    clock.advance(29 * 60)
    assert not fresh(table).allows("stripe")
    assert operator.force("stripe", CLOSED, by="ops").state == CLOSED
    assert fresh(table).allows("stripe")
    assert [v.psp for v in operator.views(("adyen", "stripe"))] == ["adyen", "stripe"]


def test_the_process_breaker_comes_from_settings(aws_env):
    breakers.reset()
    assert breakers.breaker() is breakers.breaker()
    assert breakers.breaker().allows("stripe")
    breakers.reset()


def test_an_answer_to_a_call_sent_before_it_opened_closes_nothing(table):
    fail(fresh(table), 3)
    late = fresh(table)
    late.succeeded("stripe")
    assert table.get("stripe")["state"] == OPEN
    clock.advance(61)
    late.succeeded("stripe")  # even once the wait is over: only the probe's answer closes it
    assert fresh(table).view("stripe").state == HALF_OPEN


def test_an_operators_open_holds_against_answers_and_probes_until_its_time(table):
    fresh(table).force("stripe", OPEN, minutes=30, by="ops")
    other = fresh(table)
    other.succeeded("stripe")
    clock.advance(60)
    assert not other.allows("stripe") and table.get("stripe")["state"] == OPEN
    fail(other, 5)  # failures while it is held open add nothing
    assert table.get("stripe")["trips"] == 1 and table.get("stripe")["forced_by"] == "ops"


def test_concurrent_failures_open_it_once(table):
    callers = [fresh(table) for _ in range(10)]
    threads = [threading.Thread(target=fail, args=(caller, 1)) for caller in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert table.get("stripe")["state"] == OPEN and table.get("stripe")["trips"] == 1


def test_a_breaker_that_cannot_be_read_or_written_never_fails_the_call_reporting_to_it(aws_env, monkeypatch):
    monkeypatch.setenv("PSP_HEALTH_TABLE", "no-such-table")
    from functions.shared.config import reload_settings

    reload_settings()
    breakers.reset()
    breakers.record_call("stripe", down=True, reason="HTTP 503")  # ResourceNotFoundException: logged, not raised
    breakers.record_call("stripe", down=False)
    breakers.reset()


def test_with_little_of_the_invocation_left_the_breaker_hears_nothing(table):
    breakers.reset()
    breakers.record_call("stripe", down=True, reason="HTTP 503", time_left_s=1.0)
    assert table.get("stripe") == {}
    breakers.record_call("stripe", down=True, reason="HTTP 503", time_left_s=10.0)
    assert int(table.get("stripe")["failures"]) == 1
    breakers.reset()


# --- fed by the adapters: every call of a function that has the table tells its PSP's breaker -------------------


def test_stripe_calls_that_find_it_down_open_its_breaker_and_an_answer_closes_it(sandbox, monkeypatch):
    from functions.executor import handler as executor
    from functions.shared.errors import PspTransientError
    from functions.shared.tables import PaymentTables
    from tests.integration.support import place, work_of

    monkeypatch.setenv("BREAKER_FAILURES", "2")
    from functions.shared.config import reload_settings

    reload_settings()
    breakers.reset()
    place("chk_b1")
    PaymentTables.from_settings().begin_charge_attempt("chk_b1#USD", 1, clock.iso(), clock.iso())
    work = work_of("chk_b1")
    sandbox.faults.push("http_503", times=2)
    with pytest.raises(PspTransientError):
        executor.execute(work)
    assert executor.execute(work).outcome == "parked"  # the second failure opened it: the charge waits for Stripe
    view = fresh(PspHealthTable.from_settings()).view("stripe")
    assert (view.state, view.trips, view.last_failure) == (OPEN, 1, "HTTP 503")
    breakers.reset()
    # while it waits, nothing is sent (tests/integration/test_failover.py: the charge is parked)
    requests = sandbox.faults.stats()["requests"]
    assert executor.execute(work).outcome == "parked"
    assert sandbox.faults.stats()["requests"] == requests
    assert fresh(PspHealthTable.from_settings()).view("stripe").state == OPEN
    clock.advance(31)  # the wait is over: the next call takes the probe, and Stripe's answer closes the breaker
    assert executor.execute(work).outcome == "succeeded"
    assert fresh(PspHealthTable.from_settings()).view("stripe").state == CLOSED
    breakers.reset()


def test_a_500_is_counted_but_a_500_stripe_replays_for_a_key_is_an_answer(sandbox):
    from functions.shared import psp

    breakers.reset()
    client = psp.rate_limited_retries_class()(timeout=5, wait_budget_s=0)
    headers = {"Authorization": "Bearer sk_test_local", "Idempotency-Key": "k-1",
               "Content-Type": "application/x-www-form-urlencoded"}
    sandbox.faults.push("http_500", stored=True)  # an error of the API itself, stored under the key
    url, body = f"{sandbox.url}/v1/payment_intents", "amount=100&currency=usd&payment_method=pm_card_visa"
    first = client.request("post", url, headers, body)
    assert first[1] == 500
    assert int(PspHealthTable.from_settings().get("stripe")["failures"]) == 1
    replayed = client.request("post", url, headers, body)
    assert (replayed[1], replayed[2].get("Idempotent-Replayed")) == (500, "true")
    assert int(PspHealthTable.from_settings().get("stripe")["failures"]) == 0  # Stripe answered: it is up
    breakers.reset()


def test_adyen_calls_feed_adyens_breaker(sandbox, monkeypatch):
    from functions.executor import handler as executor
    from functions.shared import psp
    from functions.shared.config import reload_settings
    from functions.shared.errors import PspTransientError
    from psp_sandbox.adyen import start_adyen_sandbox
    from psp_sandbox.adyen.server import API_KEY, HMAC_KEY, MERCHANT_ACCOUNT
    from tests.integration.test_executor_adyen import stored

    server = start_adyen_sandbox()
    try:
        for name, value in {"ADYEN_API_KEY": API_KEY, "ADYEN_MERCHANT_ACCOUNT": MERCHANT_ACCOUNT,
                            "ADYEN_HMAC_KEY": HMAC_KEY, "ADYEN_CHECKOUT_BASE": server.checkout_base}.items():
            monkeypatch.setenv(name, value)
        reload_settings()
        psp.reset_client()
        breakers.reset()
        work = stored("chk_b2")
        server.sandbox.faults.push("connection_reset", match={"path": "/v71/payments"})
        with pytest.raises(PspTransientError):
            executor.execute(work)
        assert int(PspHealthTable.from_settings().get("adyen")["failures"]) == 1
        assert executor.execute(work).outcome == "succeeded"
        after = PspHealthTable.from_settings().get("adyen")
        assert (after.get("state", CLOSED), int(after["failures"])) == (CLOSED, 0)  # Adyen answered: forgotten
        assert PspHealthTable.from_settings().get("stripe") == {}  # Stripe's breaker heard nothing
    finally:
        server.stop()
        psp.reset_client()
        breakers.reset()


def test_the_process_breaker_follows_the_settings_table(aws_env, monkeypatch):
    from functions.shared.config import reload_settings

    breakers.reset()
    first = breakers.breaker()
    monkeypatch.setenv("PSP_HEALTH_TABLE", "another-stack-PspHealth")
    reload_settings()
    assert breakers.breaker() is not first and breakers.breaker().table_name == "another-stack-PspHealth"
    breakers.reset()
