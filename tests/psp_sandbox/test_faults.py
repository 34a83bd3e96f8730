"""Each injected fault as the official SDK sees it, and seeded determinism."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
import stripe

from psp_sandbox.faults import FaultConfigError, FaultInjector, RequestInfo

from .conftest import pay


def _admin(sandbox, method, path, payload=None):
    request = urllib.request.Request(
        f"{sandbox.url}{path}",
        data=json.dumps(payload).encode() if payload is not None else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def test_latency_delays_the_answer(client, sandbox):
    sandbox.faults.push("latency", delay_ms=300)
    started = time.monotonic()
    pi = pay(client, key="po_1")
    assert time.monotonic() - started >= 0.3
    assert pi.status == "succeeded"


def test_timeout_before_processing_charges_nothing(make_client, sandbox):
    sandbox.faults.push("timeout", hold_seconds=1.0)
    with pytest.raises(stripe.APIConnectionError) as caught:
        pay(make_client(timeout=0.3), key="po_1")
    assert caught.value.should_retry is True
    assert sandbox.charges() == []


def test_timeout_after_processing_charged_and_the_retry_replays(make_client, sandbox):
    sandbox.faults.push("timeout", hold_seconds=1.0, after_processing=True)
    client = make_client(timeout=0.3)
    with pytest.raises(stripe.APIConnectionError):
        pay(client, key="po_1")
    assert [r["idempotency_key"] for r in sandbox.charges()] == ["po_1"]

    replay = pay(client, key="po_1")
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(sandbox.charges()) == 1


def test_connection_reset_is_a_retryable_connection_error(client, make_client, sandbox):
    sandbox.faults.push("connection_reset")
    with pytest.raises(stripe.APIConnectionError) as caught:
        pay(client, key="po_1")
    assert caught.value.should_retry is True
    assert sandbox.charges() == []

    sandbox.faults.push("connection_reset")
    pi = pay(make_client(retries=1), key="po_2")  # the SDK retries on its own, with the same key
    assert pi.status == "succeeded"
    assert sandbox.faults.stats()["injected"] == {"connection_reset": 2}


def test_lost_response_charged_then_dropped(client, sandbox):
    sandbox.faults.push("lost_response", match={"metadata": {"payment_order_id": "po_1"}})
    with pytest.raises(stripe.APIConnectionError):
        pay(client, key="po_1")

    # the charge was made and the key stored: a retry with the same key gets the answer that was lost
    records = sandbox.charges()
    assert [(r["status"], r["idempotency_key"]) for r in records] == [("succeeded", "po_1")]
    replay = pay(client, key="po_1")
    assert replay.id == records[0]["payment_intent"]
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(sandbox.charges()) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_edge_http_errors_are_api_errors_and_not_stored(client, sandbox, status):
    sandbox.faults.push(f"http_{status}")
    with pytest.raises(stripe.APIError) as caught:
        pay(client, key="po_1")
    assert caught.value.http_status == status
    assert sandbox.charges() == []

    pi = pay(client, key="po_1")  # nothing was stored: the retry runs
    assert pi.status == "succeeded"
    assert "Idempotent-Replayed" not in pi.last_response.headers


def test_rate_limit_is_429_with_retry_after(client, sandbox):
    sandbox.faults.push("rate_limit", retry_after=2)
    with pytest.raises(stripe.RateLimitError) as caught:
        client.v1.payment_intents.list()
    assert caught.value.http_status == 429
    assert caught.value.headers["Retry-After"] == "2"


def test_should_retry_false_stops_sdk_retries(make_client, sandbox):
    sandbox.faults.push("http_503", times=3, should_retry=False)
    with pytest.raises(stripe.APIError) as caught:
        pay(make_client(retries=2), key="po_1")
    assert caught.value.headers["Stripe-Should-Retry"] == "false"
    assert sandbox.faults.stats()["requests"] == 1


def test_should_retry_true_makes_the_sdk_retry(make_client, sandbox):
    sandbox.faults.push("rate_limit", should_retry=True)  # a 429 alone is not retried by the SDK
    pi = pay(make_client(retries=1), key="po_1")
    assert pi.status == "succeeded"
    assert sandbox.faults.stats()["requests"] == 2


def test_key_expired_makes_the_same_key_charge_again(client, sandbox):
    first = pay(client, key="po_1")
    sandbox.faults.push("key_expired", match={"idempotency_key": "po_1"})
    second = pay(client, key="po_1")
    assert second.id != first.id
    assert [r["status"] for r in sandbox.charges()] == ["succeeded", "succeeded"]


def _run(client, n=30):
    outcomes = []
    for i in range(n):
        try:
            pay(client, key=f"po_{i}")
            outcomes.append("ok")
        except stripe.APIConnectionError:
            outcomes.append("dropped")
        except stripe.APIError as exc:
            outcomes.append(str(exc.http_status))
    return outcomes


def test_same_seed_same_requests_same_faults(client, sandbox):
    rates = {"http_500": 0.2, "lost_response": 0.2, "connection_reset": 0.1}
    sandbox.faults.configure(seed=7, rates=rates)
    first = _run(client)
    first_stats = sandbox.faults.stats()
    first_charges = [(r["idempotency_key"], r["status"]) for r in sandbox.charges()]

    sandbox.reset()
    sandbox.faults.configure(seed=7, rates=rates)
    assert _run(client) == first
    assert sandbox.faults.stats() == first_stats
    assert [(r["idempotency_key"], r["status"]) for r in sandbox.charges()] == first_charges
    assert {"ok", "dropped", "500"} <= set(first)

    sandbox.reset()
    sandbox.faults.configure(seed=8, rates=rates)
    assert _run(client) != first


def test_draws_depend_on_the_request_not_the_interleaving():
    def decisions(order):
        injector = FaultInjector()
        injector.configure(seed=3, rates={"http_503": 0.5})
        found = {}
        for key in order:
            fault = injector.decide(RequestInfo("POST", "/v1/payment_intents", key, {}))
            found[key] = fault.kind if fault else None
        return found

    keys = [f"po_{i}" for i in range(20)]
    assert decisions(keys) == decisions(list(reversed(keys)))


def test_stats_keep_seeded_draws_apart_from_queued_faults():
    injector = FaultInjector()
    injector.configure(seed=3, rates={"http_503": 0.5})
    injector.push("connection_reset", match={"idempotency_key": "po_pinned"}, times=5)
    for _ in range(5):
        assert injector.decide(RequestInfo("POST", "/v1/payment_intents", "po_pinned", {})).kind == "connection_reset"
    drawn = [injector.decide(RequestInfo("POST", "/v1/payment_intents", f"po_{i}", {})) for i in range(40)]
    stats = injector.stats()
    assert stats["requests"] == 45 and stats["drawn_from"] == 40
    assert stats["drawn"] == {"http_503": sum(1 for f in drawn if f)}
    assert stats["drawn_by_path"] == {"/v1/": stats["drawn"]}  # the configured prefix every draw went through
    assert stats["injected"] == {"http_503": stats["drawn"]["http_503"], "connection_reset": 5}


def test_admin_api_configures_paths_queue_and_stats(client, sandbox):
    _admin(
        sandbox,
        "POST",
        "/_sandbox/faults",
        {
            "seed": 1,
            "rates": {"http_503": 1.0},
            "paths": ["/v1/refunds"],
            "next": [{"kind": "lost_response", "match": {"idempotency_key": "po_1"}}],
        },
    )
    with pytest.raises(stripe.APIConnectionError):
        pay(client, key="po_1")  # the queued fault
    pi = pay(client, key="po_2")  # payment_intents are outside the random paths
    with pytest.raises(stripe.APIError):
        client.v1.refunds.create(params={"payment_intent": pi.id})

    stats = _admin(sandbox, "GET", "/_sandbox/faults/stats")
    assert stats["injected"] == {"lost_response": 1, "http_503": 1}
    assert stats["requests"] == 3
    _admin(sandbox, "DELETE", "/_sandbox/faults")
    assert client.v1.refunds.create(params={"payment_intent": pi.id}).status == "succeeded"

    _admin(sandbox, "POST", "/_sandbox/reset", {})
    assert _admin(sandbox, "GET", "/_sandbox/charges") == {"data": []}


@pytest.mark.parametrize(
    "config",
    [
        {"rates": {"meteor": 0.1}},
        {"rates": {"http_500": 0.7, "lost_response": 0.7}},
        {"next": [{"kind": "x"}]},
        {"next": [{"kind": "latency", "match": {"color": "red"}}]},
        {"colour": 1},
    ],
)
def test_bad_fault_config_is_refused(sandbox, config):
    with pytest.raises(urllib.error.HTTPError) as caught:
        _admin(sandbox, "POST", "/_sandbox/faults", config)
    assert caught.value.code == 400
    with pytest.raises(FaultConfigError):
        FaultInjector().load(config)
