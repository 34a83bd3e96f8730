"""The commission of a release: rounded down, and down again until Stripe can transfer the seller's net."""

from __future__ import annotations

import pytest

from functions.payment.payouts import commission_of
from functions.shared import psp_units
from functions.shared.money import Money


@pytest.mark.parametrize(("gross", "bps", "commission"), [
    (Money(1234, "USD"), 1000, 123),  # 123.4 rounded down
    (Money(999, "USD"), 10_000, 999),
    (Money(999, "USD"), 0, 0),
    (Money(1001, "JPY"), 1500, 150),
    # KWD moves in steps of 0.010 at Stripe: 10.010 at 12.34% is 1.235, rounded down to 1.230 (net 8.780)
    (Money(10_010, "KWD"), 1234, 1230),
])
def test_commission_is_rounded_down_to_a_transferable_net(gross, bps, commission):
    assert commission_of(gross, bps) == commission
    assert psp_units.representable(Money(gross.minor - commission, gross.currency))


@pytest.mark.parametrize("bps", [-1, 10_001])
def test_a_commission_outside_0_to_10000_bps_is_refused(bps):
    with pytest.raises(ValueError):
        commission_of(Money(100, "USD"), bps)
