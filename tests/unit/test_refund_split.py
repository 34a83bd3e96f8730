"""A refund's split into the seller's share and the commission's share: exact, bounded, drift-free."""

from hypothesis import given
from hypothesis import strategies as st

from functions.wallet.refunds import split_refund


@st.composite
def orders(draw):
    gross = draw(st.integers(min_value=1, max_value=10**12))
    seller = draw(st.integers(min_value=0, max_value=gross))
    amount = draw(st.integers(min_value=1, max_value=gross))
    return amount, seller, gross


@given(orders())
def test_the_shares_add_up_to_the_refund_and_stay_within_their_sides(case):
    amount, seller_remaining, gross_remaining = case
    seller, commission = split_refund(amount, seller_remaining, gross_remaining)
    assert seller + commission == amount
    assert 0 <= seller <= seller_remaining
    assert 0 <= commission <= gross_remaining - seller_remaining


@given(orders(), st.lists(st.integers(min_value=1, max_value=10**6), max_size=8))
def test_partial_refunds_then_the_rest_take_exactly_each_side(case, pieces):
    _, seller_remaining, gross_remaining = case
    seller_total = commission_total = 0
    for piece in pieces:
        if piece >= gross_remaining:
            break
        seller, commission = split_refund(piece, seller_remaining, gross_remaining)
        seller_total, commission_total = seller_total + seller, commission_total + commission
        seller_remaining, gross_remaining = seller_remaining - seller, gross_remaining - piece
    seller, commission = split_refund(gross_remaining, seller_remaining, gross_remaining)
    assert seller == seller_remaining and commission == gross_remaining - seller_remaining


def test_an_example():
    assert split_refund(500, 1111, 1234) == (450, 50)


@given(orders().map(lambda case: tuple(10 * figure for figure in case)))
def test_in_a_currency_stripe_moves_in_steps_of_ten_the_sellers_share_is_a_movable_amount(case):
    """KWD 10.000 with a net of 9.000, a refund of 1.230: the plain split gives the seller 1.107, which Stripe
    cannot reverse nor transfer; in steps it is 1.110."""
    amount, seller_remaining, gross_remaining = case
    seller, commission = split_refund(amount, seller_remaining, gross_remaining, step=10)
    assert seller % 10 == 0 and seller + commission == amount
    assert 0 <= seller <= seller_remaining and 0 <= commission <= gross_remaining - seller_remaining
    assert split_refund(1230, 9000, 10000, step=10) == (1110, 120)
