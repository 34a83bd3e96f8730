"""No buyer data in the logs: one checkout through the local stack (API, executor, wallet, ledger, pay-out hold,
notifications out), every log line of every function and of the stack captured at DEBUG, none carrying the
buyer's name, email or anything shaped like a card number."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from functions.shared.pan import contains_card_number
from local.notification_receiver import Receiver
from tests.e2e.conftest import start_stack

pytestmark = pytest.mark.xdist_group("e2e")

NAME, EMAIL, CARD = "Ada Quintessa Lovelace", "ada.quintessa@example.com", "4242424242424242"
EMAIL_SHAPE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
# The Powertools service (and logger) names of the functions one checkout runs through (infra/names.py).
SERVICES = ("payment", "executor", "wallet", "ledger", "notify")
EMF_TIMESTAMP = re.compile(r'"Timestamp":\s*\d+')  # epoch milliseconds: 13 digits, not a card
# A Lambda request id is a random UUID: its digit-only groups, dashes between, can pass Luhn ("7-3695-4808-9061"
# failed a CI run). Not a card either.
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
# Our event and correlation ids are random hex (evt_6dbfcfc66126081893264366f533fa06): a digit run inside one
# passed Luhn in a CI run of 2026-12-07. A hex token with a letter in it is an id; a digit-only run is still read.
HEX_ID = re.compile(r"(?<![0-9A-Za-z])(?=[0-9a-f]*[a-f])[0-9a-f]{16,}(?![0-9A-Za-z])")


@pytest.fixture(scope="module")
def stack():
    running = start_stack(log_level="DEBUG")
    yield running
    running.stop()


class Capture:
    """Every line any logging handler of this process writes (formatted as it writes it: JSON with extras and
    tracebacks for the functions' loggers), and what was printed (the metrics)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]):
        self.logged: list[str] = []
        self.printed: list[str] = []
        self._capsys = capsys

    def lines(self) -> list[str]:
        self.printed += self._capsys.readouterr().out.splitlines()
        return self.logged + self.printed


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[Capture]:
    """The capture, with the functions' loggers (one per service) and the local stack's at DEBUG meanwhile.
    Libraries keep their level: botocore at DEBUG would print request bodies, as it would on Lambda too."""
    capture = Capture(capsys)
    emit = logging.StreamHandler.emit

    def recording(handler: logging.StreamHandler, record: logging.LogRecord) -> None:
        capture.logged.append(handler.format(record))
        emit(handler, record)

    loggers = [logging.getLogger(name) for name in (*SERVICES, "local.lambda", "local.gateway")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    logging.StreamHandler.emit = recording  # type: ignore[method-assign]
    try:
        yield capture
    finally:
        logging.StreamHandler.emit = emit  # type: ignore[method-assign]
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def test_a_request_id_that_passes_luhn_is_no_leak_but_a_card_beside_it_is():
    line = '{"function_request_id":"badb17a7-3695-4808-9061-d50af272dd17"}'
    assert contains_card_number(line) and leaks(line) == []
    assert leaks(line + " 4242 4242 4242 4242") == ["card number"]


def test_a_hex_id_with_a_luhn_valid_digit_run_is_no_leak_but_a_bare_card_is():
    line = '{"event_id":"evt_6dbfcfc66126081893264366f533fa06","correlation_id":"93bea81aae834f989f06e961235f55ac"}'
    assert contains_card_number(line) and leaks(line) == []
    assert leaks(line + ' "4242424242424242"') == ["card number"]


def leaks(line: str) -> list[str]:
    found = [what for what in (NAME, EMAIL, "Quintessa") if what in line]
    found += EMAIL_SHAPE.findall(line)
    if contains_card_number(HEX_ID.sub("", UUID.sub("", EMF_TIMESTAMP.sub("", line)))):
        found.append("card number")
    return found


def payment_method_with_billing_details(psp_url: str) -> str:
    """A PaymentMethod as Stripe.js makes one in the buyer's browser, with the buyer's name and email on it:
    from here on the PSP's answers about it carry them, so no function may log a PSP object whole."""
    form = {"type": "card", "card[number]": CARD, "card[exp_month]": "12", "card[exp_year]": "2030",
            "card[cvc]": "123", "billing_details[name]": NAME, "billing_details[email]": EMAIL,
            "key": "pk_test_storefront"}
    request = urllib.request.Request(f"{psp_url}/v1/payment_methods", data=urllib.parse.urlencode(form).encode(),
                                     method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())["id"]


def services_in(lines: list[str]) -> set[str]:
    return {s for line in lines for s in SERVICES if f'"service":"{s}"' in line.replace(" ", "")}


def lines_of_every_service(captured: Capture, timeout_s: float = 10.0) -> list[str]:
    """The capture once every function has written to it. The deliverer logs a delivery once the endpoint has
    answered, which can be after the receiver has handed the test the event it waited for."""
    deadline = time.monotonic() + timeout_s
    while (missing := set(SERVICES) - services_in(lines := captured.lines())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not missing, f"the capture missed the lines of {sorted(missing)}"
    return lines


def test_a_checkout_end_to_end_leaves_no_buyer_data_in_any_log(stack, api, captured: Capture) -> None:
    receiver = Receiver("mpsec_logs_" + uuid.uuid4().hex).start()
    try:
        stack.set_notification_endpoint(receiver.url, receiver.secret)
        checkout_id = f"chk_{uuid.uuid4().hex[:10]}"
        order_id = f"{checkout_id}_0"
        status, body, _ = api.post_checkout({
            "buyer_info": {"buyer_id": "buyer_logs", "name": NAME, "email": EMAIL}, "checkout_id": checkout_id,
            "credit_card_info": {"payment_method": payment_method_with_billing_details(stack.psp_url)},
            "payment_orders": [{"seller_account": "seller_logs", "amount": "12.34", "currency": "USD",
                                "payment_order_id": order_id}]})
        assert status == 202, body
        receiver.wait_for("payment_order.success", order_id, timeout_s=60)
        receiver.wait_for("payout.held", order_id, timeout_s=30)
        # A card number where a token belongs: refused, and not logged either
        status, body, _ = api.post_checkout({
            "buyer_info": {"buyer_id": "buyer_logs", "name": NAME, "email": EMAIL},
            "checkout_id": f"{checkout_id}_pan", "credit_card_info": {"payment_method": CARD},
            "payment_orders": [{"seller_account": "seller_logs", "amount": "1.00", "currency": "USD",
                                "payment_order_id": f"{order_id}_pan"}]})
        assert status == 422 and body["error"]["code"] == "card_number_not_allowed", body
    finally:
        receiver.stop()

    lines = lines_of_every_service(captured)
    leaked = {line: found for line in lines if (found := leaks(line))}
    assert leaked == {}
