import pytest

from functions.shared.status import ALLOWED_FROM, OrderStatus, can_move

S = OrderStatus


@pytest.mark.parametrize(("current", "target"), [
    (S.NOT_STARTED, S.EXECUTING), (S.EXECUTING, S.EXECUTING), (S.EXECUTING, S.SUCCESS),
    (S.EXECUTING, S.FAILED), (S.NOT_STARTED, S.FAILED),
])
def test_forward_moves_are_allowed(current, target):
    assert can_move(current, target)


@pytest.mark.parametrize(("current", "target"), [
    (S.SUCCESS, S.EXECUTING), (S.SUCCESS, S.FAILED), (S.FAILED, S.SUCCESS), (S.FAILED, S.EXECUTING),
    (S.EXECUTING, S.NOT_STARTED), (S.NOT_STARTED, S.SUCCESS), (S.SUCCESS, S.NOT_STARTED),
])
def test_nothing_moves_backwards_or_skips_the_charge(current, target):
    assert not can_move(current, target)


def test_final_statuses_are_never_a_source():
    for sources in ALLOWED_FROM.values():
        assert S.SUCCESS not in sources and S.FAILED not in sources
