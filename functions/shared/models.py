"""The workflow's input, shared by the functions (order statuses are in `functions.shared.status`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from functions.shared.money import Money


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
