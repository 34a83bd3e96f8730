"""A validation error of a request never quotes its input: raised outside the API's own handler (a log of the
exception, a dead letter), it would carry the buyer's name or email."""

import pydantic
import pytest

from functions.payment.schemas import PaymentRequest


def test_a_request_validation_error_quotes_no_buyer_data():
    body = {"buyer_info": {"name": "Ada Lovelace", "email": "ada.lovelace-at-example.com", "unexpected": "Ada"},
            "checkout_id": "chk_1", "credit_card_info": {"payment_method": "pm_card_visa"}, "payment_orders": []}
    with pytest.raises(pydantic.ValidationError) as refused:
        PaymentRequest.model_validate(body)
    text = str(refused.value)
    assert "buyer_info.email" in text and "buyer_info.unexpected" in text  # it still says what is wrong
    assert "Ada" not in text and "lovelace" not in text
