"""The payment path's metrics (functions/shared/observability.py), read from the EMF lines the handlers print:
orders accepted, succeeded, failed by reason; the PSP's latency and errors by class; low-cardinality dimensions."""

import json

import pytest

from functions.executor import handler as executor
from functions.payment import api, finalize
from functions.shared import clock
from functions.shared.errors import PspTransientError
from functions.shared.tables import PaymentTables
from tests.integration.support import place, work_of
from tests.support.events import FakeContext, http_event

IDS = ("chk_m", "chk_m_0", "chk_m_1", "seller")  # none of these may appear in a metric's dimensions


def emf(output: str) -> list[tuple[str, float, dict[str, str]]]:
    """(metric, sum of its values, its dimensions) of every EMF line printed."""
    found = []
    for line in output.splitlines():
        if not (line.startswith("{") and '"_aws"' in line):
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            dimensions = {name: document[name] for names in directive["Dimensions"] for name in names}
            for metric in directive["Metrics"]:
                values = document[metric["Name"]]
                found.append((metric["Name"], sum(values) if isinstance(values, list) else values, dimensions))
    return found


def named(found, name):
    return [(value, dimensions) for metric, value, dimensions in found if metric == name]


def assert_no_ids(found):
    for _, _, dimensions in found:
        assert not any(any(i in str(v) for i in IDS) for v in dimensions.values()), dimensions


def begun(checkout_id, card="pm_card_visa"):
    place(checkout_id, card=card)
    PaymentTables.from_settings().begin_charge_attempt(f"{checkout_id}#USD", 1, clock.iso(), clock.iso())
    return work_of(checkout_id)


def test_the_api_counts_the_orders_it_accepts_once(aws_env, capfd):
    body = {"buyer_info": {"buyer_id": "b"}, "checkout_id": "chk_m", "credit_card_info": {"payment_method": "pm_x"},
            "payment_orders": [{"seller_account": "seller", "amount": "1.00", "currency": "USD",
                                "payment_order_id": f"chk_m_{n}"} for n in range(3)]}
    capfd.readouterr()
    assert api.handler(http_event("POST", "/v1/payments", body), FakeContext())["statusCode"] == 202
    assert api.handler(http_event("POST", "/v1/payments", body), FakeContext())["statusCode"] == 202  # a replay
    found = emf(capfd.readouterr().out)
    assert named(found, "OrdersAccepted") == [(3.0, {"service": "tests"})]
    assert_no_ids(found)


def test_a_decline_is_a_psp_error_of_its_class_and_a_failed_order_of_its_reason(sandbox, capfd):
    work = begun("chk_m", card="pm_card_chargeDeclinedInsufficientFunds")
    capfd.readouterr()
    charge = executor.handler(work.model_dump(mode="json"), FakeContext())
    assert charge["failure_code"] == "insufficient_funds"
    found = emf(capfd.readouterr().out)
    latencies = named(found, "PspLatency")
    assert latencies and all(value > 0 and dims == {"service": "tests"} for value, dims in latencies)
    # rounded: a float's full digits could read as a card number to the log privacy check (and to a DLP scanner)
    assert all(value == round(value, 1) for value, _ in latencies)
    assert named(found, "PspErrors") == [(1.0, {"service": "tests", "error_class": "declined"})]

    state = {**work.model_dump(), "charge": charge}
    finalize.handler(state, FakeContext())
    finalize.handler(state, FakeContext())  # run again: the orders are final already, nothing counted twice
    found = emf(capfd.readouterr().out)
    assert named(found, "OrdersFailed") == [(2.0, {"service": "tests", "reason": "insufficient_funds"})]
    assert named(found, "OrdersSucceeded") == []
    assert_no_ids(found)


def test_a_success_counts_its_orders_and_no_psp_error(sandbox, capfd):
    work = begun("chk_m")
    capfd.readouterr()
    charge = executor.handler(work.model_dump(mode="json"), FakeContext())
    finalize.handler({**work.model_dump(), "charge": charge}, FakeContext())
    found = emf(capfd.readouterr().out)
    assert named(found, "PspErrors") == [] and named(found, "PspLatency")
    assert [value for value, _ in named(found, "OrdersSucceeded")] == [2.0]
    assert named(found, "OrdersFailed") == []


def test_a_workflow_error_is_the_reason_and_an_unbounded_reason_is_folded(aws_env, capfd):
    work = begun("chk_m")
    capfd.readouterr()
    finalize.handler({**work.model_dump(), "error": {"Error": "PspPermanentError", "Cause": "{}"}}, FakeContext())
    found = emf(capfd.readouterr().out)
    assert named(found, "OrdersFailed") == [(2.0, {"service": "tests", "reason": "PspPermanentError"})]
    work = begun("chk_n")
    finalize.handler({**work.model_dump(), "error": {"Error": "weird reason with spaces " * 5}}, FakeContext())
    assert named(emf(capfd.readouterr().out), "OrdersFailed") == [(2.0, {"service": "tests", "reason": "other"})]


def test_a_rate_limited_request_and_a_reset_connection_are_counted_by_class(sandbox, capfd):
    work = begun("chk_m")
    sandbox.faults.push("rate_limit", retry_after=0)  # retried at once by RateLimitedRetries: then charged
    capfd.readouterr()
    assert executor.handler(work.model_dump(mode="json"), FakeContext())["outcome"] == "succeeded"
    found = emf(capfd.readouterr().out)
    assert named(found, "PspErrors") == [(1.0, {"service": "tests", "error_class": "rate_limited"})]
    assert len(named(found, "PspLatency")) >= 2  # the 429 and the retry, each measured

    work = begun("chk_n")
    sandbox.faults.push("connection_reset")
    capfd.readouterr()
    with pytest.raises(PspTransientError):  # the workflow retries it
        executor.handler(work.model_dump(mode="json"), FakeContext())
    assert (1.0, {"service": "tests", "error_class": "network"}) in named(emf(capfd.readouterr().out), "PspErrors")
