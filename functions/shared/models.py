"""The workflow's input, shared by the functions (statuses are in `functions.shared.status`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from functions.shared.money import Money
from functions.shared.names import charge_key

# Bank debits (SEPA, ACH; issue 17): `processing` for days, decided by the buyer's bank.
DEBIT_PAYMENT_METHOD_TYPES = frozenset({"sepa_debit", "us_bank_account"})


class OrderShare(BaseModel):
    """One order of a charge: what the wallet and the ledger apply once, keyed by payment_order_id."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    payment_order_id: str
    seller_account: str
    amount_minor: int
    psp: str = "stripe"


class ChargeWork(BaseModel):
    """What the workflow carries for one charge (a checkout in one currency): everything the steps need."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    charge_key: str
    checkout_id: str
    currency: str
    amount_minor: int
    payment_method: str
    psp: str = "stripe"
    orders: tuple[OrderShare, ...] = Field(min_length=1)
    attempt: int = 1
    first_attempt_at: str = ""
    # Set on a re-drive when the PSP already knows the charge: the executor then reads its current state.
    psp_reference: str = ""
    # Every currency of the checkout (written by the API): more than one means several PaymentIntents share the
    # checkout's PaymentMethod. Empty on charges stored before the field existed (then: one).
    checkout_currencies: tuple[str, ...] = ()
    # Other methods than a card (issue 17): the Stripe type; a redirect's (PayPal) return_url. A card: "card" and "".
    # A bank debit's mandate acceptance (the buyer's IP address and user agent) stays on the charge item, out of
    # the workflow's input and so out of its dead letters: the executor reads it there.
    payment_method_type: str = "card"
    return_url: str = ""
    # The checkout's correlation id (functions/shared/observability.py), as stored with the charge: the same on
    # every attempt, so the PaymentIntent's metadata (compared by an idempotent replay) never changes.
    correlation_id: str = ""
    # An Adyen card's buyer browser and storefront origin (JSON: schemas.AdyenBrowser), read from the charge item by
    # the executor as its encrypted card is: "" when the storefront sent none (then Adyen's redirect flow).
    adyen_browser: str = ""

    @classmethod
    def from_charge_item(cls, item: dict, attempt: int) -> ChargeWork:
        return cls(
            charge_key=item["charge_key"], checkout_id=item["checkout_id"], currency=item["currency"],
            amount_minor=item["amount_minor"], payment_method=item["payment_method"], psp=item.get("psp", "stripe"),
            orders=tuple(OrderShare(**order) for order in item["orders"]), attempt=attempt,
            first_attempt_at=item.get("first_attempt_at", ""), psp_reference=item.get("psp_reference", ""),
            checkout_currencies=tuple(item.get("checkout_currencies", ())),
            payment_method_type=item.get("payment_method_type", "card"), return_url=item.get("return_url", ""),
            correlation_id=item.get("correlation_id", ""),
        )

    @property
    def amount(self) -> Money:
        return Money(self.amount_minor, self.currency)

    @property
    def is_debit(self) -> bool:
        """A bank debit (SEPA, ACH): `processing` for days, decided by the bank."""
        return self.payment_method_type in DEBIT_PAYMENT_METHOD_TYPES

    @property
    def shares_payment_method(self) -> bool:
        return len(set(self.checkout_currencies)) > 1

    @property
    def payment_order_ids(self) -> list[str]:
        return [order.payment_order_id for order in self.orders]

    def share(self, order: OrderShare) -> Money:
        return Money(order.amount_minor, self.currency)


class OrderWork(BaseModel):
    """One stored order, as other parts (reconciliation) hand it back: its charge is what gets driven."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    payment_order_id: str
    checkout_id: str
    seller_account: str
    amount_minor: int
    currency: str
    payment_method: str
    attempt: int = 1
    first_attempt_at: str = ""
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
    def charge_key(self) -> str:
        return charge_key(self.checkout_id, self.currency)

    @property
    def amount(self) -> Money:
        return Money(self.amount_minor, self.currency)
