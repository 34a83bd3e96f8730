"""Order statuses and the one table of moves allowed between them."""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    NOT_STARTED = "NOT_STARTED"
    EXECUTING = "EXECUTING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.SUCCESS, OrderStatus.FAILED)


# The one table of allowed moves, enforced by a DynamoDB condition on every status write.
# EXECUTING -> EXECUTING is a re-drive (a new attempt); nothing ever leaves SUCCESS or FAILED.
ALLOWED_FROM: dict[OrderStatus, tuple[OrderStatus, ...]] = {
    OrderStatus.NOT_STARTED: (),
    OrderStatus.EXECUTING: (OrderStatus.NOT_STARTED, OrderStatus.EXECUTING),
    OrderStatus.SUCCESS: (OrderStatus.EXECUTING,),
    OrderStatus.FAILED: (OrderStatus.NOT_STARTED, OrderStatus.EXECUTING),
}


def can_move(current: OrderStatus, target: OrderStatus) -> bool:
    return current in ALLOWED_FROM[target]


class PayoutStatus(StrEnum):
    """An order's pay-out: held until delivery, released (commission frozen), transferred to the seller."""

    HELD = "HELD"
    RELEASED = "RELEASED"
    TRANSFERRING = "TRANSFERRING"
    TRANSFERRED = "TRANSFERRED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (PayoutStatus.TRANSFERRED, PayoutStatus.FAILED)


# TRANSFERRING -> TRANSFERRING is a retry of the same transfer (same PSP key). FAILED -> RELEASED is not here:
# only the explicit `ops payouts retry` makes it (PayoutsTable.retry_failed).
PAYOUT_ALLOWED_FROM: dict[PayoutStatus, tuple[PayoutStatus, ...]] = {
    PayoutStatus.HELD: (),
    PayoutStatus.RELEASED: (PayoutStatus.HELD,),
    PayoutStatus.TRANSFERRING: (PayoutStatus.RELEASED, PayoutStatus.TRANSFERRING),
    PayoutStatus.TRANSFERRED: (PayoutStatus.TRANSFERRING,),
    PayoutStatus.FAILED: (PayoutStatus.RELEASED, PayoutStatus.TRANSFERRING),
}
