"""The sandbox's records and their Stripe JSON shapes. Amounts are integers in minor units, as in Stripe's API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .catalogue import TestCard

# Stripe's currency exponents (docs.stripe.com/currencies): zero- and three-decimal currencies; the rest have 2.
ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
TWO_DECIMAL = frozenset(
    {
        "usd",
        "eur",
        "gbp",
        "cad",
        "aud",
        "nzd",
        "chf",
        "sek",
        "nok",
        "dkk",
        "pln",
        "czk",
        "huf",
        "ron",
        "bgn",
        "mxn",
        "brl",
        "sgd",
        "hkd",
        "inr",
        "zar",
        "aed",
        "sar",
        "ils",
        "thb",
        "myr",
        "php",
        "cny",
        "try",
        "twd",
        "isk",  # zero-decimal in ISO 4217, two-decimal in Stripe's API (amounts.py: multiples of 100)
    }
)
CURRENCIES = ZERO_DECIMAL | THREE_DECIMAL | TWO_DECIMAL

AVAILABLE_AFTER_SECONDS = 2 * 24 * 3600  # card funds become available two days after the charge


def currency_exponent(currency: str) -> int:
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def stripe_fee(amount: int) -> int:
    """2.9% + 30 minor units, the 2.9% rounded half up, in integers only."""
    return (amount * 29 + 500) // 1000 + 30


@dataclass(slots=True)
class PaymentIntent:
    id: str
    amount: int
    currency: str
    created: int
    metadata: dict[str, str]
    payment_method_types: list[str]
    status: str
    idempotency_key: str | None
    payment_method: str | None = None
    automatic_payment_methods: dict[str, Any] | None = None
    description: str | None = None
    customer: str | None = None
    transfer_group: str | None = None
    latest_charge: str | None = None
    last_payment_error: dict[str, Any] | None = None
    next_action: dict[str, Any] | None = None
    return_url: str | None = None  # where a redirect method (PayPal) sends the buyer back; not in Stripe's JSON
    mandate_data: dict[str, Any] | None = None  # a bank debit's customer acceptance (the mandate is not modelled)
    canceled_at: int | None = None
    cancellation_reason: str | None = None

    def to_stripe(self) -> dict[str, Any]:
        succeeded = self.status == "succeeded"
        return {
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": 0,
            "amount_received": self.amount if succeeded else 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": self.automatic_payment_methods,
            "canceled_at": self.canceled_at,
            "cancellation_reason": self.cancellation_reason,
            "capture_method": "automatic",
            "client_secret": f"{self.id}_secret_sandbox",
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "customer": self.customer,
            "description": self.description,
            "last_payment_error": self.last_payment_error,
            "latest_charge": self.latest_charge,
            "livemode": False,
            "metadata": dict(self.metadata),
            "next_action": self.next_action,
            "payment_method": self.payment_method,
            "payment_method_types": list(self.payment_method_types),
            "status": self.status,
            "transfer_group": self.transfer_group,
        }


@dataclass(slots=True)
class PaymentMethod:
    """A `pm_…` card PaymentMethod. Holds the test card it stands for (brand, last4, expiry, outcome), never a
    card number. Not attached to a Customer, it can be used for one PaymentIntent (`used_by`)."""

    id: str
    card: TestCard
    created: int
    metadata: dict[str, str]
    billing_details: dict[str, Any]
    customer: str | None = None
    used_by: str | None = None  # the PaymentIntent that consumed it while it had no Customer
    detached: bool = False

    def to_stripe(self) -> dict[str, Any]:
        if self.card.kind != "card":
            return {"id": self.id, "object": "payment_method", "billing_details": {
                "address": None, "email": None, "name": None, "phone": None, **self.billing_details},
                self.card.kind: self.card.details(), "created": self.created, "customer": self.customer,
                "livemode": False, "metadata": dict(self.metadata), "type": self.card.kind}
        details = self.card.details()
        return {
            "id": self.id,
            "object": "payment_method",
            "billing_details": {
                "address": None,
                "email": None,
                "name": None,
                "phone": None,
                **self.billing_details,
            },
            "card": {
                **details,
                "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
                "display_brand": details["brand"],
                "fingerprint": f"sbx{self.card.last4}{self.card.brand[:4]}",
                "generated_from": None,
                "networks": {"available": [details["brand"]], "preferred": None},
                "three_d_secure_usage": {"supported": True},
                "wallet": None,
            },
            "created": self.created,
            "customer": self.customer,
            "livemode": False,
            "metadata": dict(self.metadata),
            "type": "card",
        }


@dataclass(slots=True)
class Customer:
    id: str
    created: int
    metadata: dict[str, str]
    email: str | None = None
    name: str | None = None
    description: str | None = None

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "customer",
            "created": self.created,
            "description": self.description,
            "email": self.email,
            "invoice_settings": {"default_payment_method": None},
            "livemode": False,
            "metadata": dict(self.metadata),
            "name": self.name,
        }


@dataclass(slots=True)
class Charge:
    id: str
    payment_intent: str
    amount: int
    currency: str
    created: int
    status: str  # succeeded | failed | pending
    metadata: dict[str, str]
    payment_method: str
    card: TestCard
    idempotency_key: str | None
    description: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    decline_code: str | None = None
    amount_refunded: int = 0
    balance_transaction: str | None = None
    transfer_group: str | None = None
    customer: str | None = None
    settles_at: int | None = None  # a bank debit: when its bank answers (sandbox clock)

    def to_stripe(self) -> dict[str, Any]:
        succeeded = self.status == "succeeded"
        if self.status == "failed":
            outcome = {
                "network_status": "declined_by_network",
                "reason": self.decline_code,
                "risk_level": "normal",
                "seller_message": "The bank did not return any further details with this decline.",
                "type": "issuer_declined",
            }
        else:
            outcome = {
                "network_status": "approved_by_network",
                "reason": None,
                "risk_level": "normal",
                "seller_message": "Payment complete.",
                "type": "authorized",
            }
        return {
            "id": self.id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": self.amount if succeeded else 0,
            "amount_refunded": self.amount_refunded,
            "balance_transaction": self.balance_transaction,
            "captured": succeeded,
            "created": self.created,
            "currency": self.currency,
            "customer": self.customer,
            "description": self.description,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "livemode": False,
            "metadata": dict(self.metadata),
            "outcome": outcome,
            "paid": succeeded,
            "payment_intent": self.payment_intent,
            "payment_method": self.payment_method,
            "payment_method_details": {"type": self.card.kind, self.card.kind: self.card.details()},
            "refunded": succeeded and self.amount_refunded == self.amount,
            "status": self.status,
            "transfer_group": self.transfer_group,
        }


@dataclass(slots=True)
class Refund:
    id: str
    charge: str
    payment_intent: str
    amount: int
    currency: str
    created: int
    metadata: dict[str, str]
    idempotency_key: str | None
    reason: str | None = None
    balance_transaction: str | None = None
    status: str = "succeeded"
    # Asynchronous outcome (issue 16 a): a `pending` refund becomes `outcome` once the sandbox clock reaches
    # `settles_at` (SandboxState.settle_refunds); failed or canceled ones carry Stripe's failure_reason.
    settles_at: int = 0
    outcome: str = "succeeded"
    failure_reason: str | None = None
    failure_balance_transaction: str | None = None

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "refund",
            "failure_reason": self.failure_reason,
            "failure_balance_transaction": self.failure_balance_transaction,
            "amount": self.amount,
            "balance_transaction": self.balance_transaction,
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "metadata": dict(self.metadata),
            "payment_intent": self.payment_intent,
            "reason": self.reason,
            "status": self.status,
        }


@dataclass(slots=True)
class Account:
    """A connected account (Connect). `balance` is its Stripe balance per currency: transfers in, reversals and
    bank payouts out (one figure: the sandbox does not split it into pending and available)."""

    id: str
    type: str
    country: str
    default_currency: str
    created: int
    metadata: dict[str, str]
    capabilities: dict[str, str]  # name -> active | inactive
    email: str | None = None
    business_type: str | None = None
    disabled_reason: str | None = None
    balance: dict[str, int] = field(default_factory=dict)

    def can_receive_transfers(self) -> bool:
        return self.capabilities.get("transfers") == "active"

    def to_stripe(self) -> dict[str, Any]:
        enabled = self.disabled_reason is None
        return {
            "id": self.id,
            "object": "account",
            "business_type": self.business_type,
            "capabilities": dict(self.capabilities),
            "charges_enabled": enabled and self.capabilities.get("card_payments") == "active",
            "country": self.country,
            "created": self.created,
            "default_currency": self.default_currency,
            "details_submitted": True,
            "email": self.email,
            "metadata": dict(self.metadata),
            "payouts_enabled": enabled,
            "requirements": {
                "alternatives": [],
                "current_deadline": None,
                "currently_due": [] if enabled else ["external_account"],
                "disabled_reason": self.disabled_reason,
                "errors": [],
                "eventually_due": [],
                "past_due": [] if enabled else ["external_account"],
                "pending_verification": [],
            },
            "type": self.type,
        }


@dataclass(slots=True)
class TransferReversal:
    id: str
    transfer: str
    amount: int
    currency: str
    created: int
    metadata: dict[str, str]
    destination_payment_refund: str
    balance_transaction: str | None = None

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "transfer_reversal",
            "amount": self.amount,
            "balance_transaction": self.balance_transaction,
            "created": self.created,
            "currency": self.currency,
            "destination_payment_refund": self.destination_payment_refund,
            "metadata": dict(self.metadata),
            "source_refund": None,
            "transfer": self.transfer,
        }


@dataclass(slots=True)
class Transfer:
    id: str
    amount: int
    currency: str
    destination: str
    destination_payment: str
    created: int
    metadata: dict[str, str]
    idempotency_key: str | None
    description: str | None = None
    transfer_group: str | None = None
    source_transaction: str | None = None
    balance_transaction: str | None = None
    reversals: list[TransferReversal] = field(default_factory=list)  # oldest first

    @property
    def amount_reversed(self) -> int:
        return sum(r.amount for r in self.reversals)

    def to_stripe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "transfer",
            "amount": self.amount,
            "amount_reversed": self.amount_reversed,
            "balance_transaction": self.balance_transaction,
            "created": self.created,
            "currency": self.currency,
            "description": self.description,
            "destination": self.destination,
            "destination_payment": self.destination_payment,
            "livemode": False,
            "metadata": dict(self.metadata),
            "reversals": {
                "object": "list",
                "data": [r.to_stripe() for r in reversed(self.reversals)],
                "has_more": False,
                "total_count": len(self.reversals),
                "url": f"/v1/transfers/{self.id}/reversals",
            },
            "reversed": self.amount_reversed == self.amount,
            "source_transaction": self.source_transaction,
            "source_type": "card",
            "transfer_group": self.transfer_group,
        }


@dataclass(slots=True)
class BalanceTransaction:
    id: str
    amount: int  # signed: + charge, - refund, - transfer, + transfer reversal
    fee: int
    currency: str
    created: int
    available_on: int
    type: str
    reporting_category: str
    source: str
    description: str | None = None
    fee_details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def net(self) -> int:
        return self.amount - self.fee

    def to_stripe(self, now: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "balance_transaction",
            "amount": self.amount,
            "available_on": self.available_on,
            "created": self.created,
            "currency": self.currency,
            "description": self.description,
            "exchange_rate": None,
            "fee": self.fee,
            "fee_details": [dict(d) for d in self.fee_details],
            "net": self.net,
            "reporting_category": self.reporting_category,
            "source": self.source,
            "status": "available" if now >= self.available_on else "pending",
            "type": self.type,
        }
