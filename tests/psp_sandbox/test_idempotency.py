"""Stripe's idempotency rules, seen through the official SDK."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
import stripe

from psp_sandbox.idempotency import KEY_LIFETIME_SECONDS

from .conftest import pay


def _admin(sandbox, path, payload):
    request = urllib.request.Request(
        f"{sandbox.url}{path}",
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def test_same_key_replays_the_first_answer_with_the_replay_header(client, sandbox):
    first = pay(client, key="po_1")
    again = pay(client, key="po_1")

    assert again.id == first.id
    assert again.last_response.body == first.last_response.body
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert again.last_response.headers["Original-Request"] == first.last_response.request_id
    assert again.last_response.request_id != first.last_response.request_id
    assert len(sandbox.charges()) == 1


def test_a_decline_is_stored_and_replayed(client, sandbox):
    with pytest.raises(stripe.CardError) as first:
        pay(client, "pm_card_chargeDeclined", key="po_d")
    with pytest.raises(stripe.CardError) as again:
        pay(client, "pm_card_chargeDeclined", key="po_d")

    assert again.value.http_body == first.value.http_body
    assert again.value.headers["Idempotent-Replayed"] == "true"
    assert len(sandbox.charges()) == 1


def test_same_key_different_parameters_is_an_idempotency_error(client, sandbox):
    pay(client, amount=2500, key="po_1")
    with pytest.raises(stripe.IdempotencyError) as caught:
        pay(client, amount=2600, key="po_1")
    assert caught.value.http_status == 400
    assert caught.value.error.type == "idempotency_error"
    with pytest.raises(stripe.IdempotencyError):  # same key on another endpoint
        client.v1.refunds.create(params={"payment_intent": "pi_x"}, options={"idempotency_key": "po_1"})
    assert len(sandbox.charges()) == 1


def test_validation_errors_are_not_stored(client, sandbox):
    with pytest.raises(stripe.InvalidRequestError):
        pay(client, currency="xyz", key="po_1")
    pi = pay(client, key="po_1")  # the corrected request runs: nothing was stored for the key
    assert pi.status == "succeeded"
    assert "Idempotent-Replayed" not in pi.last_response.headers


def test_keys_are_scoped_per_api_key(make_client, sandbox):
    a = pay(make_client("sk_test_a"), key="po_1")
    b = pay(make_client("sk_test_b"), key="po_1")
    assert a.id != b.id
    assert len(sandbox.charges()) == 2


def test_a_key_in_flight_gets_409_and_the_sdk_sees_a_retryable_error(client, sandbox):
    # Given a first request held in flight for a while
    sandbox.faults.push("latency", match={"idempotency_key": "po_1"}, delay_ms=600)
    results: dict[str, object] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", pay(client, key="po_1")))
    first.start()
    time.sleep(0.2)

    # When a second request with the same key arrives meanwhile
    with pytest.raises(stripe.APIError) as caught:
        pay(client, key="po_1")
    first.join()

    # Then it is refused with 409, marked retryable, and nothing is charged twice
    assert caught.value.http_status == 409
    assert caught.value.error.type == "idempotency_error"
    assert caught.value.error.code == "idempotency_key_in_use"
    assert caught.value.headers["Stripe-Should-Retry"] == "true"
    assert stripe.RequestsClient()._should_retry((None, 409, caught.value.headers), None, 0, 1) is True
    assert results["first"].status == "succeeded"
    assert len(sandbox.charges()) == 1


def test_sdk_retry_after_409_gets_the_replay(make_client, sandbox):
    sandbox.faults.push("latency", match={"idempotency_key": "po_1"}, delay_ms=300)
    client = make_client(retries=3)
    results: dict[str, object] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", pay(client, key="po_1")))
    first.start()
    time.sleep(0.1)
    second = pay(client, key="po_1")
    first.join()

    assert second.id == results["first"].id
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(sandbox.charges()) == 1


def test_keys_are_pruned_after_24_simulated_hours(client, sandbox):
    first = pay(client, key="po_1")

    assert _admin(sandbox, "/_sandbox/clock", {"advance_seconds": KEY_LIFETIME_SECONDS - 60})["pruned_keys"] == 0
    assert pay(client, key="po_1").id == first.id  # still within the lifetime: replayed

    assert _admin(sandbox, "/_sandbox/clock", {"advance_seconds": 61})["pruned_keys"] == 1
    second = pay(client, key="po_1")
    assert second.id != first.id  # the key is gone: Stripe would charge again
    assert "Idempotent-Replayed" not in second.last_response.headers
    assert [r["payment_intent"] for r in sandbox.charges()] == [first.id, second.id]


def test_an_api_500_is_stored_and_replayed(client, sandbox):
    sandbox.faults.push("http_500", match={"idempotency_key": "po_1"}, stored=True)
    with pytest.raises(stripe.APIError) as first:
        pay(client, key="po_1")
    with pytest.raises(stripe.APIError) as again:
        pay(client, key="po_1")

    assert (first.value.http_status, again.value.http_status) == (500, 500)
    assert again.value.http_body == first.value.http_body
    assert again.value.headers["Idempotent-Replayed"] == "true"
    assert sandbox.charges() == []


def test_every_answer_has_a_request_id(client, sandbox):
    pi = pay(client, key="po_1")
    assert pi.last_response.request_id.startswith("req_")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.charges.retrieve("ch_missing")
    assert caught.value.request_id.startswith("req_")
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/health") as answer:
        assert answer.headers["Request-Id"].startswith("req_")


def test_an_unexpected_500_of_the_api_is_stored_too(client, sandbox, monkeypatch):
    def broken(request):
        raise RuntimeError("bug")

    monkeypatch.setattr(sandbox.sandbox.api, "handle", broken)
    with pytest.raises(stripe.APIError) as first:
        pay(client, key="po_1")
    monkeypatch.undo()
    with pytest.raises(stripe.APIError) as again:  # the API works again, but the key holds the 500
        pay(client, key="po_1")
    assert (first.value.http_status, again.value.http_status) == (500, 500)
    assert again.value.headers["Idempotent-Replayed"] == "true"
    assert pay(client, key="po_2").status == "succeeded"
