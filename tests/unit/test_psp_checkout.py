"""Which charges attach the checkout's PaymentMethod to a Customer first, and when the keys count as aged."""

from datetime import timedelta

import pytest

from functions.shared import clock, psp
from functions.shared.models import ChargeWork, OrderShare


def work(payment_method="pm_1Abc", currencies=("USD", "EUR"), first_attempt_at=""):
    return ChargeWork(charge_key="chk#USD", checkout_id="chk", currency="USD", amount_minor=1000,
                      payment_method=payment_method, orders=(OrderShare(payment_order_id="po", seller_account="s",
                                                                        amount_minor=1000),),
                      checkout_currencies=currencies, first_attempt_at=first_attempt_at)


@pytest.mark.parametrize(("payment_method", "currencies", "needed"), [
    ("pm_1Abc", ("USD", "EUR"), True),            # a Stripe.js token paying two PaymentIntents
    ("pm_1Abc", ("USD",), False),                 # one PaymentIntent: the token as it is
    ("pm_1Abc", (), False),                       # a charge stored before the field: as before
    ("pm_card_visa", ("USD", "EUR"), False),      # Stripe's magic test tokens are reusable
    ("pm_1Abc", ("USD", "USD"), False),
])
def test_a_customer_is_needed_only_when_a_single_use_token_pays_several_charges(payment_method, currencies,
                                                                                needed):
    assert psp.needs_customer(work(payment_method, currencies)) is needed


def test_the_keys_count_as_aged_just_past_the_safe_age():
    aged = work(first_attempt_at=clock.iso())
    try:
        assert not psp.key_aged(aged) and not psp.key_aged(work())
        clock.advance((psp.IDEMPOTENCY_KEY_SAFE_AGE - timedelta(seconds=5)).total_seconds())
        assert not psp.key_aged(aged)
        clock.advance(10)
        assert psp.key_aged(aged)
    finally:
        clock.reset()
