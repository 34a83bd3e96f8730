"""One correlation id per checkout through the local stack (README "Correlation id"): the storefront's
X-Correlation-Id comes back in the API's answer, is on every log line of the executor, in the PaymentIntent's
metadata at the PSP and on the notification the storefront receives (header and envelope field)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from local.notification_receiver import Receiver
from tests.e2e.conftest import start_stack

pytestmark = pytest.mark.xdist_group("e2e")


@pytest.fixture(scope="module")
def stack():
    running = start_stack(log_level="INFO")
    yield running
    ungranted = running.ungranted_calls()
    running.stop()
    assert not ungranted, f"AWS calls the calling function's role does not grant: {ungranted}"


@pytest.fixture
def executor_lines() -> Iterator[list[dict]]:
    """Every record the executor's logger (Powertools, service "executor") writes meanwhile, as the JSON it writes."""
    lines: list[dict] = []
    emit = logging.StreamHandler.emit

    def recording(handler: logging.StreamHandler, record: logging.LogRecord) -> None:
        text = handler.format(record)
        if record.name == "executor" and text.startswith("{"):  # pytest's own capture formats as text
            lines.append(json.loads(text))
        emit(handler, record)

    logging.StreamHandler.emit = recording  # type: ignore[method-assign]
    try:
        yield lines
    finally:
        logging.StreamHandler.emit = emit  # type: ignore[method-assign]


def checkout(checkout_id: str) -> dict:
    return {"buyer_info": {"buyer_id": "buyer_c"}, "checkout_id": checkout_id,
            "credit_card_info": {"payment_method": "pm_card_visa"},
            "payment_orders": [{"seller_account": "seller_corr", "amount": "7.00", "currency": "USD",
                                "payment_order_id": f"{checkout_id}_0"}]}


def test_one_correlation_id_from_the_api_to_the_psp_and_the_notification(stack, api, executor_lines):
    receiver = Receiver("mpsec_corr_" + uuid.uuid4().hex).start()
    try:
        stack.set_notification_endpoint(receiver.url, receiver.secret)
        correlation_id = f"shop-req-{uuid.uuid4().hex}"
        checkout_id = f"chk_{uuid.uuid4().hex[:10]}"
        status, body, headers = api.request("POST", "/v1/payments", checkout(checkout_id),
                                            headers={"X-Correlation-Id": correlation_id})
        assert status == 202, body
        assert headers["x-correlation-id"] == correlation_id
        success = receiver.wait_for("payment_order.success", f"{checkout_id}_0", timeout_s=60)
    finally:
        receiver.stop()

    assert success["correlation_id"] == correlation_id
    assert receiver.headers[success["id"]]["X-Correlation-Id"] == correlation_id
    [intent] = [c for c in stack.sandbox.charges() if c["metadata"].get("checkout_id", "").endswith(checkout_id)]
    assert intent["metadata"]["correlation_id"] == correlation_id
    mine = [line for line in executor_lines if checkout_id in json.dumps(line)]
    assert mine and all(line.get("correlation_id") == correlation_id for line in mine), mine
    assert any(line["message"] == "charge outcome" for line in mine)


def test_without_a_usable_id_the_api_makes_one_and_answers_it(api):
    for sent in ({}, {"X-Correlation-Id": "bad id with spaces"}):
        status, body, headers = api.request("POST", "/v1/payments", checkout(f"chk_{uuid.uuid4().hex[:10]}"),
                                            headers=sent)
        assert status == 202, body
        made = headers["x-correlation-id"]
        assert len(made) == 32 and made != sent.get("X-Correlation-Id")
    status, _, headers = api.request("GET", "/v1/payments/nope", headers={"X-Correlation-Id": "shop-req-00000001"})
    assert status == 404 and headers["x-correlation-id"] == "shop-req-00000001"  # errors carry it too
