"""A dispute's amount over the orders of its charge: exact minor units that add up, none past its order."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.disputes.attribution import attribute

weights = st.dictionaries(st.text("abcdef", min_size=1, max_size=4), st.integers(0, 10**8), min_size=1, max_size=12)


@given(weights, st.data())
def test_parts_add_up_exactly_and_none_passes_its_order(ws, data):
    total = sum(ws.values())
    if total == 0:
        return
    amount = data.draw(st.integers(1, total))
    parts = attribute(amount, ws)
    assert set(parts) == set(ws) and sum(parts.values()) == amount
    assert all(0 <= parts[o] <= ws[o] for o in ws)
    # proportional within one unit
    assert all(abs(parts[o] * total - amount * ws[o]) < total for o in ws)


def test_examples():
    assert attribute(1000, {"a": 1000, "b": 1000, "c": 1000}) == {"a": 334, "b": 333, "c": 333}
    assert attribute(1001, {"a": 2000, "b": 1000}) == {"a": 667, "b": 334}
    assert attribute(500, {"a": 2000, "b": 1000}, named="b") == {"a": 0, "b": 500}


def test_more_than_the_orders_hold_is_refused():
    with pytest.raises(ValueError):
        attribute(3001, {"a": 2000, "b": 1000})
    with pytest.raises(ValueError):
        attribute(1001, {"a": 2000, "b": 1000}, named="b")
