"""Domain models shared by the functions: order statuses and their allowed transitions, workflow input."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from functions.shared.money import Money


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


class OrderWork(BaseModel):
    """What the workflow carries for one order: everything the steps need, so they read nothing."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    payment_order_id: str
    checkout_id: str
    seller_account: str
    amount_minor: int
    currency: str
    payment_method: str
    attempt: int = 1
    first_attempt_at: str = ""
    # Set on a re-drive when the PSP already knows the charge: the executor then reads its current state.
    psp_reference: str = ""

    @classmethod
    def from_order_item(cls, item: dict, attempt: int) -> OrderWork:
        return cls(
            payment_order_id=item["payment_order_id"], checkout_id=item["checkout_id"],
            seller_account=item["seller_account"], amount_minor=item["amount_minor"], currency=item["currency"],
            payment_method=item["payment_method"], attempt=attempt,
            first_attempt_at=item.get("first_attempt_at", ""), psp_reference=item.get("psp_reference", ""),
        )

    @property
    def amount(self) -> Money:
        return Money(self.amount_minor, self.currency)
