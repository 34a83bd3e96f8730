"""The sandbox's books: PaymentMethods, Customers, PaymentIntents, Charges, Refunds, Transfers,
BalanceTransactions, and the rules that move them. Every method takes the one state lock, so concurrent requests
see a consistent ledger."""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from . import errors
from .amounts import check_amount_units, shown_amount
from .catalogue import CARDS, DEBIT_CURRENCIES, DEBIT_KINDS, PAYPAL_CURRENCIES, PAYPAL_KIND, Outcome, TestCard
from .clock import SimulatedClock
from .disputes import Dispute, refund_refused_by_dispute
from .models import (
    AVAILABLE_AFTER_SECONDS,
    Account,
    BalanceTransaction,
    Charge,
    Customer,
    PaymentIntent,
    PaymentMethod,
    Refund,
    Transfer,
    TransferReversal,
    currency_exponent,
    stripe_fee,
)

CONFIRMABLE = frozenset({"requires_payment_method", "requires_confirmation", "requires_action"})
CANCELABLE = frozenset({"requires_payment_method", "requires_confirmation", "requires_action"})
# requirements.disabled_reason values of a restricted account (docs.stripe.com/api/accounts/object).
REFUND_OUTCOMES = ("succeeded", "failed", "canceled")
DEBIT_PROCESSING_SECONDS = 3 * 86_400  # a bank debit's answer: days at the bank (Stripe's test mode: minutes)
REFUND_SETTLE_TICK_S = 0.2  # how often a pending refund's time is checked by the sandbox's own settler
# Sandbox extension: a refund created with this metadata key takes that outcome when it settles.
REFUND_OUTCOME_METADATA = "sandbox_outcome"
DISABLED_REASONS = (
    "requirements.past_due",
    "requirements.pending_verification",
    "rejected.fraud",
    "rejected.terms_of_service",
    "rejected.listed",
    "rejected.other",
    "under_review",
    "listed",
    "platform_paused",
    "other",
)
BALANCE_INSUFFICIENT = (
    "Insufficient funds in your Stripe account. In test mode, you can add funds to your available balance "
    "(bypassing your pending balance) with a charge that has a card number of 4000 0000 0000 0077."
)
_EURO_COUNTRIES = frozenset(
    {"AT", "BE", "CY", "DE", "EE", "ES", "FI", "FR", "GR", "HR", "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PT",
     "SI", "SK"}
)  # fmt: skip
_COUNTRY_CURRENCY = {
    "US": "usd", "GB": "gbp", "CA": "cad", "AU": "aud", "NZ": "nzd", "CH": "chf", "SE": "sek", "NO": "nok",
    "DK": "dkk", "PL": "pln", "CZ": "czk", "HU": "huf", "RO": "ron", "BG": "bgn", "JP": "jpy", "SG": "sgd",
    "HK": "hkd", "MX": "mxn", "BR": "brl", "IN": "inr", "AE": "aed", "TH": "thb", "MY": "myr",
}  # fmt: skip


def currency_of_country(country: str) -> str:
    """A new account's default currency: its country's (usd where the sandbox does not know it)."""
    return "eur" if country in _EURO_COUNTRIES else _COUNTRY_CURRENCY.get(country, "usd")


def format_major(amount: int, currency: str) -> str:
    exponent = currency_exponent(currency)
    sign = "-" if amount < 0 else ""
    digits = str(abs(amount)).rjust(exponent + 1, "0")
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}" if exponent else f"{sign}{digits}"


class SandboxState:
    def __init__(self, clock: SimulatedClock | None = None) -> None:
        self.clock = clock or SimulatedClock()
        self.balance_short = False
        # Refunds (issue 16 a): seconds a new refund stays `pending` on the sandbox clock (0: succeeded at once,
        # as most card refunds at Stripe); set by tests or POST /_sandbox/refunds.
        self.refund_pending_seconds = 0
        self.debit_processing_seconds = DEBIT_PROCESSING_SECONDS
        self._refund_settler: threading.Thread | None = None
        self.lock = threading.RLock()
        self._counters: Counter[str] = Counter()
        self.payment_methods: dict[str, PaymentMethod] = {}
        self.customers: dict[str, Customer] = {}
        self.payment_intents: dict[str, PaymentIntent] = {}
        self.charges: dict[str, Charge] = {}
        self.refunds: dict[str, Refund] = {}
        self.accounts: dict[str, Account] = {}
        self.transfers: dict[str, Transfer] = {}
        self.transfer_reversals: dict[str, TransferReversal] = {}
        self.balance_transactions: dict[str, BalanceTransaction] = {}
        # Called with (event type, the object's Stripe JSON, connected account or None) for each change that
        # Stripe would send a webhook for (psp_sandbox/webhooks.py; set by sandbox.py).
        self.on_event: Callable[[str, dict[str, Any], str | None], Any] | None = None
        self.disputes: dict[str, Dispute] = {}  # issue 16: psp_sandbox/disputes.py

    def reset(self) -> None:
        """Forget everything (in place: the API's routes hold these stores)."""
        with self.lock:
            self._counters.clear()
            self.balance_short = False
            self.refund_pending_seconds = 0
            self.debit_processing_seconds = DEBIT_PROCESSING_SECONDS
            for store in self._stores():
                store.clear()

    def _stores(self) -> tuple[dict[str, Any], ...]:
        return (
            self.payment_methods,
            self.customers,
            self.payment_intents,
            self.charges,
            self.refunds,
            self.accounts,
            self.transfers,
            self.transfer_reversals,
            self.balance_transactions,
            self.disputes,
        )

    def new_id(self, prefix: str) -> str:
        """Deterministic, Stripe-looking ids: prefix, underscore, 24 characters."""
        with self.lock:
            self._counters[prefix] += 1
            return f"{prefix}_3Sbx{self._counters[prefix]:020x}"

    # ---- PaymentMethods and Customers ---------------------------------------------------------------------

    def create_payment_method(
        self,
        *,
        card: TestCard,
        exp_month: int | None,
        exp_year: int | None,
        metadata: dict[str, str],
        billing_details: dict[str, Any],
    ) -> PaymentMethod:
        with self.lock:
            pm_id = self.new_id("pm")
            pm = PaymentMethod(
                id=pm_id,
                card=card.minted(pm_id, exp_month, exp_year),
                created=self.clock.timestamp(),
                metadata=metadata,
                billing_details=billing_details,
            )
            self.payment_methods[pm_id] = pm
            return pm

    def create_customer(
        self,
        *,
        email: str | None,
        name: str | None,
        description: str | None,
        metadata: dict[str, str],
        payment_method: str | None,
    ) -> Customer:
        with self.lock:
            if payment_method is not None and payment_method not in CARDS:
                self._check_attachable(self._referenced_payment_method(payment_method), None)
            customer = Customer(
                id=self.new_id("cus"),
                created=self.clock.timestamp(),
                metadata=metadata,
                email=email,
                name=name,
                description=description,
            )
            self.customers[customer.id] = customer
            if payment_method is not None:
                self.attach_payment_method(payment_method, customer.id)
            return customer

    def attach_payment_method(self, pm_id: str, customer_id: str) -> PaymentMethod:
        """Attach to a Customer (reusable from then on, with that Customer). A magic `pm_card_*` is cloned into a
        new attached PaymentMethod, as Stripe does."""
        with self.lock:
            if customer_id not in self.customers:
                raise errors.no_such("customer", customer_id, param="customer", status=400)
            magic = CARDS.get(pm_id)
            if magic is not None:
                pm = self.create_payment_method(
                    card=magic, exp_month=None, exp_year=None, metadata={}, billing_details={}
                )
            else:
                pm = self.payment_method(pm_id)
                self._check_attachable(pm, customer_id)
            pm.customer = customer_id
            return pm

    def detach_payment_method(self, pm_id: str) -> PaymentMethod:
        """Detached, a PaymentMethod can never be used or attached again."""
        with self.lock:
            pm = self.payment_method(pm_id)
            if pm.customer is None:
                raise errors.invalid_request(
                    "The payment method you provided is not attached to a customer so detachment is impossible.",
                    param="payment_method",
                )
            pm.customer = None
            pm.detached = True
            return pm

    @staticmethod
    def _check_attachable(pm: PaymentMethod, customer_id: str | None) -> None:
        if pm.detached or (pm.customer is None and pm.used_by is not None):
            raise errors.invalid_request(errors.PAYMENT_METHOD_CONSUMED)
        if pm.customer is not None and pm.customer != customer_id:
            raise errors.invalid_request(
                "The payment method you provided has already been attached to a customer.", param="payment_method"
            )

    def _referenced_payment_method(self, pm_id: str) -> PaymentMethod:
        pm = self.payment_methods.get(pm_id)
        if pm is None:
            raise errors.no_such("PaymentMethod", pm_id, param="payment_method", status=400)
        return pm

    def _usable_card(self, pm_id: str, customer: str | None, pi_id: str | None) -> TestCard:
        """The card behind `pm_id` if a PaymentIntent (`pi_id`, None while being created) of `customer` may use it:
        magic test PaymentMethods always; a `pm_…` once without a Customer, or again and again with its own."""
        magic = CARDS.get(pm_id)
        if magic is not None:
            return magic
        pm = self._referenced_payment_method(pm_id)
        if pm.detached or (pm.customer is None and pm.used_by not in (None, pi_id)):
            raise errors.payment_method_reused()
        if pm.customer is not None and customer is None:
            # Stripe refuses this; the wording here is the sandbox's.
            raise errors.invalid_request(
                f"The PaymentMethod {pm_id} is attached to a Customer: pass that Customer's id as `customer`.",
                param="customer",
            )
        if pm.customer is not None and pm.customer != customer:
            raise errors.invalid_request(
                f"The customer does not have a payment method with the ID {pm_id}. The payment method must be "
                "attached to the customer.",
                param="payment_method",
            )
        return pm.card

    def _use_payment_method(self, pi: PaymentIntent) -> TestCard:
        """The card a confirmation charges; a `pm_…` without a Customer is spent on this PaymentIntent."""
        assert pi.payment_method is not None
        card = self._usable_card(pi.payment_method, pi.customer, pi.id)
        pm = self.payment_methods.get(pi.payment_method)
        if pm is not None and pm.customer is None:
            pm.used_by = pi.id
        return card

    # ---- PaymentIntents -------------------------------------------------------------------------------

    def create_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        payment_method: str | None,
        payment_method_types: list[str],
        automatic_payment_methods: dict[str, Any] | None,
        description: str | None,
        customer: str | None,
        transfer_group: str | None,
        confirm: bool,
        idempotency_key: str | None,
        return_url: str | None = None,
        mandate_data: dict[str, Any] | None = None,
    ) -> PaymentIntent:
        with self.lock:
            for kind in DEBIT_KINDS & set(payment_method_types):
                if currency != DEBIT_CURRENCIES[kind]:
                    raise errors.invalid_request(
                        f"The currency provided ({currency}) is invalid. Payments with {kind} support the following "
                        f"currencies: {DEBIT_CURRENCIES[kind]}.", param="currency",
                        code="payment_intent_invalid_parameter")
            if customer is not None and customer not in self.customers:
                raise errors.no_such("customer", customer, param="customer", status=400)
            if PAYPAL_KIND in payment_method_types and currency not in PAYPAL_CURRENCIES:
                raise errors.invalid_request(
                    f"The currency provided ({currency}) is invalid. Payments with paypal support the following "
                    f"currencies: {', '.join(sorted(PAYPAL_CURRENCIES))}.", param="currency",
                    code="payment_intent_invalid_parameter")
            if payment_method is not None:
                self._allowed(self._usable_card(payment_method, customer, None), payment_method_types)
            pi = PaymentIntent(
                id=self.new_id("pi"),
                amount=amount,
                currency=currency,
                created=self.clock.timestamp(),
                metadata=metadata,
                payment_method_types=payment_method_types,
                status="requires_confirmation" if payment_method else "requires_payment_method",
                idempotency_key=idempotency_key,
                payment_method=payment_method,
                automatic_payment_methods=automatic_payment_methods,
                description=description,
                customer=customer,
                transfer_group=transfer_group,
                return_url=return_url,
                mandate_data=mandate_data,
            )
            self.payment_intents[pi.id] = pi
            self.emit("payment_intent.created", pi)
            if confirm:
                self._confirm(pi, idempotency_key)
            return pi

    def confirm_payment_intent(
        self, pi_id: str, *, payment_method: str | None, idempotency_key: str | None, return_url: str | None = None,
        mandate_data: dict[str, Any] | None = None,
    ) -> PaymentIntent:
        with self.lock:
            pi = self.payment_intent(pi_id)
            if pi.status not in CONFIRMABLE:
                raise errors.unexpected_state(
                    f"This PaymentIntent's status is {pi.status}, but it must be one of "
                    f"{', '.join(sorted(CONFIRMABLE))} to be confirmed.",
                    pi.to_stripe(),
                )
            if payment_method is not None:
                self._allowed(self._usable_card(payment_method, pi.customer, pi.id), pi.payment_method_types)
                pi.payment_method = payment_method
            if return_url is not None:
                pi.return_url = return_url
            if mandate_data is not None:
                pi.mandate_data = mandate_data
            self._confirm(pi, idempotency_key)
            return pi

    def cancel_payment_intent(self, pi_id: str, *, reason: str | None) -> PaymentIntent:
        with self.lock:
            pi = self.payment_intent(pi_id)
            if pi.status not in CANCELABLE:
                raise errors.unexpected_state(
                    f"You cannot cancel this PaymentIntent because it has a status of {pi.status}. Only a "
                    f"PaymentIntent with one of the following statuses may be canceled: "
                    f"{', '.join(sorted(CANCELABLE))}.",
                    pi.to_stripe(),
                )
            pi.status = "canceled"
            pi.canceled_at = self.clock.timestamp()
            pi.cancellation_reason = reason
            pi.next_action = None
            self.emit_intent(pi)
            return pi

    def resolve_payment_intent(self, pi_id: str, outcome: str) -> PaymentIntent:
        """Sandbox extension: finish a `processing` or `requires_action` PaymentIntent as `succeeded`/`failed`."""
        if outcome not in ("succeeded", "failed"):
            raise errors.invalid_request("outcome must be 'succeeded' or 'failed'", param="outcome")
        with self.lock:
            pi = self.payment_intent(pi_id)
            if pi.status == "processing":
                charge = self.charges[pi.latest_charge or ""]
                if outcome == "succeeded":
                    self._settle_charge(charge)
                    pi.status = "succeeded"
                else:
                    charge.status = "failed"
                    charge.failure_code, charge.decline_code = "card_declined", "generic_decline"
                    charge.failure_message = "Your card was declined."
                    pi.status = "requires_payment_method"
                    pi.last_payment_error = self._payment_error(pi, charge, CARDS["pm_card_chargeDeclined"])
                    pi.payment_method = None
            elif pi.status == "requires_action":
                pi.next_action = None
                if outcome == "failed" and self._card(pi.payment_method or "").kind == PAYPAL_KIND:
                    pi.status = "requires_payment_method"  # the buyer cancelled or PayPal refused, on its page
                    pi.last_payment_error = {
                        "type": "invalid_request_error",
                        "code": "payment_intent_payment_attempt_failed",
                        "message": "The latest payment attempt of this PaymentIntent has failed or been canceled, "
                                   "and the attached payment method has been removed.",
                    }
                    pi.payment_method = None
                elif outcome == "succeeded":
                    card = self._card(pi.payment_method or "")  # spent on this PaymentIntent already
                    charge = self._new_charge(pi, card, "succeeded", pi.idempotency_key)
                    self._settle_charge(charge)
                    pi.status = "succeeded"
                else:
                    pi.status = "requires_payment_method"
                    pi.last_payment_error = {
                        "type": "invalid_request_error",
                        "code": "payment_intent_authentication_failure",
                        "message": "The provided PaymentMethod has failed authentication.",
                    }
                    pi.payment_method = None
            else:
                raise errors.unexpected_state(
                    f"Only a processing or requires_action PaymentIntent can be resolved, not {pi.status}.",
                    pi.to_stripe(),
                )
            self.emit_intent(pi)
            return pi

    @staticmethod
    def _check_mandate(mandate_data: dict[str, Any] | None) -> None:
        """A bank debit needs the customer's acceptance of the mandate: online, with their IP and user agent."""
        acceptance = (mandate_data or {}).get("customer_acceptance")
        online = acceptance.get("online") if isinstance(acceptance, dict) else None
        if not isinstance(acceptance, dict) or acceptance.get("type") != "online" or not isinstance(online, dict) \
                or not online.get("ip_address") or not online.get("user_agent"):
            raise errors.invalid_request(
                "A bank debit needs mandate_data[customer_acceptance] of type online, with online[ip_address] and "
                "online[user_agent].", param="mandate_data", code="parameter_missing")

    def settle_debits(self) -> None:
        """Sandbox clock: a bank debit whose bank has answered succeeds, or fails with the test account's code
        (the PaymentIntent back to requires_payment_method, as Stripe's: `payment_intent.payment_failed`)."""
        now = self.clock.timestamp()
        with self.lock:
            for charge in list(self.charges.values()):
                if charge.status != "pending" or charge.settles_at is None or charge.settles_at > now:
                    continue
                pi = self.payment_intents[charge.payment_intent]
                if pi.status != "processing":
                    continue
                decline = charge.card.decline
                if decline is None:
                    self._settle_charge(charge)
                    pi.status = "succeeded"
                else:
                    charge.status = "failed"
                    charge.failure_code, charge.decline_code = decline.code, decline.decline_code
                    charge.failure_message = decline.message
                    pi.status = "requires_payment_method"
                    pi.last_payment_error = {"type": "invalid_request_error", "charge": charge.id,
                                             "code": decline.code, "message": decline.message}
                    pi.payment_method = None
                self.emit_intent(pi)

    def return_debit(self, pi_id: str, code: str) -> PaymentIntent:
        """Sandbox extension (POST /_sandbox/payment_intents/{id}/return): the buyer's bank returns a debit that had
        succeeded (an ACH return, a SEPA refusal within its window). As Stripe: the Charge and the PaymentIntent
        fail, the amount leaves the balance (a `payment_failure_refund`, reported as `charge_failure`), and
        `payment_intent.payment_failed` is sent.
        Transfers already made from it stay: the platform must take the seller's share back itself."""
        with self.lock:
            pi = self.payment_intent(pi_id)
            charge = self.charges.get(pi.latest_charge or "")
            if pi.status != "succeeded" or charge is None or charge.card.kind not in DEBIT_KINDS:
                raise errors.unexpected_state(f"Only a succeeded bank debit can be returned, not this {pi.status} "
                                              "PaymentIntent.", pi.to_stripe())
            returned = charge.amount - charge.amount_refunded
            charge.status, charge.failure_code, charge.decline_code = "failed", code, code
            charge.failure_message = "The customer's bank returned the debit."
            charge.amount_refunded = charge.amount
            self._new_balance_transaction(amount=-returned, fee=0, currency=charge.currency,
                                          kind="payment_failure_refund", source=charge.id,
                                          reporting_category="charge_failure")
            pi.status = "requires_payment_method"
            pi.last_payment_error = {"type": "invalid_request_error", "charge": charge.id, "code": code,
                                     "message": charge.failure_message}
            self.emit_intent(pi)
            return pi

    def _debits_pending(self) -> bool:
        return any(c.status == "pending" and c.settles_at is not None for c in self.charges.values())

    @staticmethod
    def _allowed(card: TestCard, payment_method_types: list[str]) -> None:
        if card.kind not in payment_method_types:
            raise errors.invalid_request(
                f"The PaymentMethod provided ({card.kind}) is not allowed for this PaymentIntent. Please attach a "
                f"PaymentMethod of one of the following types: {', '.join(payment_method_types)}.",
                param="payment_method", code="payment_intent_invalid_parameter")

    def _card(self, payment_method: str) -> TestCard:
        card = CARDS.get(payment_method)
        return card if card is not None else self._referenced_payment_method(payment_method).card

    def _confirm(self, pi: PaymentIntent, idempotency_key: str | None) -> None:
        if pi.payment_method is None:
            raise errors.invalid_request(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                param="payment_method",
                code="payment_intent_unexpected_state",
            )
        if self._card(pi.payment_method).kind == PAYPAL_KIND and not pi.return_url:
            raise errors.invalid_request(
                "A return_url must be specified because this PaymentIntent uses a payment method that requires a "
                "redirect (paypal).", param="return_url")
        if self._card(pi.payment_method).kind in DEBIT_KINDS:
            self._check_mandate(pi.mandate_data)
        card = self._use_payment_method(pi)
        pi.last_payment_error = None
        pi.next_action = None
        if card.kind in DEBIT_KINDS:  # the bank answers in days: `processing` until then (settle_debits)
            charge = self._new_charge(pi, card, "pending", idempotency_key)
            charge.settles_at = self.clock.timestamp() + self.debit_processing_seconds
            pi.status = "processing"
            self.emit_intent(pi)
            self._start_refund_settler()
            return
        if card.kind == PAYPAL_KIND:  # the buyer approves on PayPal's page, then comes back to return_url
            pi.status = "requires_action"
            pi.next_action = {"type": "redirect_to_url", "redirect_to_url": {
                "url": f"https://pm-redirects.stripe.com/authorize/acct_sandbox/pa_nonce_{pi.id[3:]}",
                "return_url": pi.return_url}}
            self.emit_intent(pi)
            return
        if card.outcome is Outcome.REQUIRES_ACTION:
            pi.status = "requires_action"
            pi.next_action = {
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {"type": "three_d_secure_redirect", "source": f"src_{pi.id[3:]}"},
            }
            self.emit_intent(pi)
            return
        if card.outcome is Outcome.PROCESSING:
            self._new_charge(pi, card, "pending", idempotency_key)
            pi.status = "processing"
            self.emit_intent(pi)
            return
        if card.outcome is Outcome.SUCCEEDED:
            charge = self._new_charge(pi, card, "succeeded", idempotency_key)
            self._settle_charge(charge)
            pi.status = "succeeded"
            self.emit_intent(pi)
            return
        decline = card.decline
        assert decline is not None
        charge = self._new_charge(pi, card, "failed", idempotency_key)
        charge.failure_code, charge.decline_code, charge.failure_message = (
            decline.code,
            decline.decline_code,
            decline.message,
        )
        pi.status = "requires_payment_method"
        pi.last_payment_error = self._payment_error(pi, charge, card)
        pi.payment_method = None
        self.emit_intent(pi)
        # The decline is an answer of an endpoint that ran: the PaymentIntent changed and the 402 is stored.
        raise errors.StripeApiError(
            402,
            "card_error",
            decline.message,
            code=decline.code,
            decline_code=decline.decline_code,
            param=decline.param,
            extra={
                "charge": charge.id,
                "payment_intent": pi.to_stripe(),
                "payment_method": self._payment_method_json(card),
            },
        )

    def _payment_error(self, pi: PaymentIntent, charge: Charge, card: TestCard) -> dict[str, Any]:
        error = {
            "type": "card_error",
            "charge": charge.id,
            "code": charge.failure_code,
            "decline_code": charge.decline_code,
            "message": charge.failure_message,
            "payment_method": self._payment_method_json(card),
        }
        if card.decline and card.decline.param:
            error["param"] = card.decline.param
        return error

    def _payment_method_json(self, card: TestCard) -> dict[str, Any]:
        if card.id in self.payment_methods:
            return self.payment_methods[card.id].to_stripe()
        return {"id": card.id, "object": "payment_method", "type": "card", "card": card.details()}

    def _new_charge(self, pi: PaymentIntent, card: TestCard, status: str, idempotency_key: str | None) -> Charge:
        charge = Charge(
            id=self.new_id("ch"),
            payment_intent=pi.id,
            amount=pi.amount,
            currency=pi.currency,
            created=self.clock.timestamp(),
            status=status,
            metadata=dict(pi.metadata),
            payment_method=card.id,
            card=card,
            idempotency_key=idempotency_key,
            description=pi.description,
            transfer_group=pi.transfer_group,
            customer=pi.customer,
        )
        self.charges[charge.id] = charge
        pi.latest_charge = charge.id
        return charge

    def _settle_charge(self, charge: Charge) -> None:
        charge.status = "succeeded"
        fee = stripe_fee(charge.amount)
        txn = self._new_balance_transaction(
            amount=charge.amount,
            fee=fee,
            currency=charge.currency,
            kind="charge",
            source=charge.id,
            available_after=0 if charge.card.bypass_pending else AVAILABLE_AFTER_SECONDS,
            description=charge.description,
        )
        txn.fee_details = [
            {"amount": fee, "currency": charge.currency, "description": "Stripe processing fees", "type": "stripe_fee"}
        ]
        charge.balance_transaction = txn.id

    def _new_balance_transaction(
        self,
        *,
        amount: int,
        fee: int,
        currency: str,
        kind: str,
        source: str,
        available_after: int = 0,
        description: str | None = None,
        reporting_category: str | None = None,
    ) -> BalanceTransaction:
        created = self.clock.timestamp()
        txn = BalanceTransaction(
            id=self.new_id("txn"),
            amount=amount,
            fee=fee,
            currency=currency,
            created=created,
            available_on=created + available_after,
            type=kind,
            reporting_category=reporting_category or kind,
            source=source,
            description=description,
        )
        self.balance_transactions[txn.id] = txn
        return txn

    # ---- Refunds ----------------------------------------------------------------------------------------

    def create_refund(
        self,
        *,
        payment_intent: str | None,
        charge: str | None,
        amount: int | None,
        reason: str | None,
        metadata: dict[str, str],
        idempotency_key: str | None,
    ) -> Refund:
        with self.lock:
            target = self._refundable_charge(payment_intent, charge)
            remaining = target.amount - target.amount_refunded
            if remaining <= 0:
                raise errors.invalid_request(
                    f"Charge {target.id} has already been refunded.", code="charge_already_refunded"
                )
            amount = remaining if amount is None else amount
            check_amount_units(amount, target.currency)
            if amount > remaining:
                raise errors.invalid_request(
                    f"Refund amount ({format_major(amount, target.currency)} {target.currency}) is greater than "
                    f"unrefunded amount on charge ({format_major(remaining, target.currency)} {target.currency})",
                    param="amount",
                    code="amount_too_large",
                )
            refund = Refund(
                id=self.new_id("re"),
                charge=target.id,
                payment_intent=target.payment_intent,
                amount=amount,
                currency=target.currency,
                created=self.clock.timestamp(),
                metadata=metadata,
                idempotency_key=idempotency_key,
                reason=reason,
            )
            refund.balance_transaction = self._new_balance_transaction(
                amount=-amount,
                fee=0,
                currency=target.currency,
                kind="refund",
                source=refund.id,
                description=reason,
            ).id
            target.amount_refunded += amount
            self.refunds[refund.id] = refund
            outcome = metadata.get(REFUND_OUTCOME_METADATA, "succeeded")
            if outcome not in REFUND_OUTCOMES:
                raise errors.invalid_request(f"metadata[{REFUND_OUTCOME_METADATA}] must be one of "
                                             f"{', '.join(REFUND_OUTCOMES)}", param="metadata")
            refund.outcome = outcome
            if self.refund_pending_seconds > 0 or outcome != "succeeded":
                refund.status = "pending"
                refund.settles_at = refund.created + self.refund_pending_seconds
            # As Stripe: the Refund's creation and the Charge's refunded total, then (settle) its outcome.
            self.emit("refund.created", refund.to_stripe())
            self.emit("charge.refunded", target.to_stripe())
            self.settle_refunds()
            if refund.status == "pending":
                self._start_refund_settler()
            return refund

    def _start_refund_settler(self) -> None:
        """A daemon thread that settles pending refunds when the sandbox clock reaches their time, so their
        events are sent without anyone asking for the Refund (as Stripe's are); it ends when none is pending."""
        with self.lock:
            if self._refund_settler is not None and self._refund_settler.is_alive():
                return
            self._refund_settler = threading.Thread(target=self._settle_while_pending, daemon=True,
                                                    name="psp-sandbox-refunds")
            self._refund_settler.start()

    def _settle_while_pending(self) -> None:
        while True:
            time.sleep(REFUND_SETTLE_TICK_S)
            self.settle_refunds()
            self.settle_debits()
            with self.lock:
                if not any(r.status == "pending" for r in self.refunds.values()) and not self._debits_pending():
                    self._refund_settler = None
                    return

    def settle_refunds(self) -> None:
        """Sandbox clock: every pending refund whose time has come takes its outcome (Stripe's refunds are
        asynchronous: pending -> succeeded | failed | canceled)."""
        now = self.clock.timestamp()
        with self.lock:
            for refund in self.refunds.values():
                if refund.status == "pending" and refund.settles_at <= now:
                    self._resolve_refund(refund, refund.outcome)

    def resolve_refund(self, refund_id: str, outcome: str) -> Refund:
        """Sandbox extension (POST /_sandbox/refunds/{id}/resolve): decide a pending refund now."""
        if outcome not in REFUND_OUTCOMES:
            raise errors.invalid_request(f"outcome must be one of {', '.join(REFUND_OUTCOMES)}", param="outcome")
        with self.lock:
            refund = self.refund(refund_id)
            if refund.status != "pending":
                raise errors.invalid_request(f"Refund {refund_id} is {refund.status}, not pending.")
            self._resolve_refund(refund, outcome)
            return refund

    def _resolve_refund(self, refund: Refund, outcome: str) -> None:
        """A failed or canceled refund gives its amount back to the charge and to the balance (Stripe's
        `refund_failure` balance transaction)."""
        refund.status = outcome
        if outcome != "succeeded":
            refund.failure_reason = "expired_or_canceled_card" if outcome == "failed" else None
            self.charges[refund.charge].amount_refunded -= refund.amount
            refund.failure_balance_transaction = self._new_balance_transaction(
                amount=refund.amount, fee=0, currency=refund.currency, kind="refund_failure", source=refund.id,
                reporting_category="refund_failure").id
        # As Stripe: the Refund's status change, under both names, and `refund.failed` for a failed one.
        self.emit("refund.updated", refund.to_stripe())
        self.emit("charge.refund.updated", refund.to_stripe())
        if outcome == "failed":
            self.emit("refund.failed", refund.to_stripe())

    def _refundable_charge(self, payment_intent: str | None, charge_id: str | None) -> Charge:
        if payment_intent is None and charge_id is None:
            raise errors.invalid_request(
                "One of the following params should be provided for this request: payment_intent or charge.",
                code="parameter_missing",
            )
        charge: Charge | None = None
        if charge_id is not None:
            charge = self.charges.get(charge_id)
            if charge is None:
                raise errors.no_such("charge", charge_id, param="charge", status=400)
        if payment_intent is not None:
            pi = self.payment_intents.get(payment_intent)
            if pi is None:
                raise errors.no_such("payment_intent", payment_intent, param="payment_intent", status=400)
            if charge is not None and charge.payment_intent != pi.id:
                raise errors.invalid_request(
                    f"Charge {charge.id} does not belong to PaymentIntent {pi.id}.", param="charge"
                )
            if charge is None and pi.status == "succeeded" and pi.latest_charge:
                charge = self.charges[pi.latest_charge]
            if charge is None:
                raise errors.invalid_request(
                    f"This PaymentIntent ({pi.id}) does not have a successful charge to refund.",
                    param="payment_intent",
                    code="charge_not_refundable",
                )
        assert charge is not None
        if charge.status != "succeeded":
            raise errors.invalid_request(
                f"Charge {charge.id} has status {charge.status} and cannot be refunded.",
                code="charge_not_refundable",
            )
        refund_refused_by_dispute(self, charge.id)
        return charge

    # ---- Connected accounts (Connect) ---------------------------------------------------------------------

    def create_account(
        self,
        *,
        type: str,
        country: str,
        email: str | None,
        capabilities: list[str],
        business_type: str | None,
        default_currency: str | None,
        metadata: dict[str, str],
    ) -> Account:
        """A connected account whose requested capabilities are active at once (at Stripe they wait for
        onboarding: the sandbox skips it)."""
        with self.lock:
            account = Account(
                id=self.new_id("acct"),
                type=type,
                country=country,
                default_currency=default_currency or currency_of_country(country),
                created=self.clock.timestamp(),
                metadata=metadata,
                capabilities=dict.fromkeys(capabilities, "active"),
                email=email,
                business_type=business_type,
            )
            self.accounts[account.id] = account
            return account

    def restrict_account(self, account_id: str, reason: str = "requirements.past_due") -> Account:
        """Sandbox extension: what Stripe does when requirements go past due or the account is rejected: its
        capabilities become inactive and `requirements.disabled_reason` says why."""
        if reason not in DISABLED_REASONS:
            raise errors.invalid_request(f"reason must be one of {', '.join(DISABLED_REASONS)}", param="reason")
        with self.lock:
            account = self.account(account_id)
            account.capabilities = dict.fromkeys(account.capabilities, "inactive")
            account.disabled_reason = reason
            self.emit("account.updated", account)
            return account

    def unrestrict_account(self, account_id: str) -> Account:
        with self.lock:
            account = self.account(account_id)
            account.capabilities = dict.fromkeys(account.capabilities, "active")
            account.disabled_reason = None
            self.emit("account.updated", account)
            return account

    def pay_out_account(self, account_id: str, amount: int, currency: str) -> Account:
        """Sandbox extension: the connected account pays `amount` out to its bank (its balance goes down)."""
        with self.lock:
            account = self.account(account_id)
            held = account.balance.get(currency, 0)
            if amount <= 0 or amount > held:
                raise errors.invalid_request(
                    f"The account {account_id} holds {format_major(held, currency)} {currency}: it cannot pay "
                    f"out {format_major(amount, currency)}.",
                    param="amount",
                    code="balance_insufficient",
                )
            account.balance[currency] = held - amount
            self.emit("payout.paid", self._bank_payout(account, amount, currency), account=account.id)
            return account

    # ---- the platform's balance ---------------------------------------------------------------------------

    def platform_balance(self) -> tuple[dict[str, int], dict[str, int]]:
        """(available, pending) per currency: each balance transaction's net, available once its day has come."""
        now = self.clock.timestamp()
        available: dict[str, int] = {}
        pending: dict[str, int] = {}
        with self.lock:
            for txn in self.balance_transactions.values():
                bucket = available if now >= txn.available_on else pending
                bucket[txn.currency] = bucket.get(txn.currency, 0) + txn.net
        return available, pending

    def set_balance_short(self, short: bool) -> None:
        """Sandbox extension: stand-in for a platform balance made negative by disputes and refunds. While
        short, every transfer is refused with `balance_insufficient`, one with a `source_transaction` too."""
        with self.lock:
            self.balance_short = short

    # ---- Transfers ----------------------------------------------------------------------------------------

    def create_transfer(
        self,
        *,
        amount: int,
        currency: str,
        destination: str,
        metadata: dict[str, str],
        description: str | None,
        transfer_group: str | None,
        source_transaction: str | None,
        idempotency_key: str | None,
    ) -> Transfer:
        with self.lock:
            account = self.accounts.get(destination)
            if account is None:
                raise errors.no_such("destination", destination, param="destination", status=400)
            if not account.can_receive_transfers():
                raise errors.refused(
                    "Your destination account needs to have at least one of the following capabilities enabled: "
                    "transfers, crypto_transfers, legacy_payments",
                    param="destination",
                    code="insufficient_capabilities_for_transfer",
                )
            check_amount_units(amount, currency)
            available_after = 0
            if source_transaction is not None:
                available_after = self._check_source(source_transaction, amount, currency)
            if self.balance_short or (
                source_transaction is None and amount > self.platform_balance()[0].get(currency, 0)
            ):
                raise errors.refused(BALANCE_INSUFFICIENT, code="balance_insufficient")
            transfer = Transfer(
                id=self.new_id("tr"),
                amount=amount,
                currency=currency,
                destination=destination,
                destination_payment=self.new_id("py"),
                created=self.clock.timestamp(),
                metadata=metadata,
                idempotency_key=idempotency_key,
                description=description,
                transfer_group=transfer_group,
                source_transaction=source_transaction,
            )
            transfer.balance_transaction = self._new_balance_transaction(
                amount=-amount,
                fee=0,
                currency=currency,
                kind="transfer",
                source=transfer.id,
                available_after=available_after,
                description=description,
            ).id
            account.balance[currency] = account.balance.get(currency, 0) + amount
            self.transfers[transfer.id] = transfer
            self.emit("transfer.created", transfer)
            return transfer

    def _check_source(self, charge_id: str, amount: int, currency: str) -> int:
        """Refuse a transfer its source charge cannot fund; returns the seconds until the charge's funds become
        available (the transfer's funds follow them)."""
        charge = self.charges.get(charge_id)
        if charge is None:
            raise errors.no_such("charge", charge_id, param="source_transaction", status=400)
        if charge.status != "succeeded":
            # Stripe's wording for this refusal is not documented: this one is the sandbox's.
            raise errors.invalid_request(
                f"The source_transaction {charge_id} has status {charge.status}: only a succeeded charge can fund "
                "a transfer.",
                param="source_transaction",
            )
        if charge.currency != currency:
            raise errors.invalid_request(
                f"The currency of source_transaction's balance transaction ({charge.currency}) must be the same as "
                f"the transfer currency ({currency})",
                param="currency",
            )
        transferred = sum(
            t.amount - t.amount_reversed for t in self.transfers.values() if t.source_transaction == charge_id
        )
        if amount > charge.amount - charge.amount_refunded - transferred:
            message = (
                "Transfers using this transaction as a source must not exceed the source amount of "
                f"{shown_amount(charge.amount - charge.amount_refunded, currency)}."
            )
            if transferred:
                message += (
                    " (There is already a transfer using this source, amounting to "
                    f"{shown_amount(transferred, currency)}.)"
                )
            raise errors.invalid_request(message)
        txn = self.balance_transactions[charge.balance_transaction or ""]
        return max(0, txn.available_on - self.clock.timestamp())

    def create_transfer_reversal(
        self, transfer_id: str, *, amount: int | None, description: str | None, metadata: dict[str, str]
    ) -> TransferReversal:
        """Take (part of) a transfer back from the connected account, as far as its balance allows."""
        with self.lock:
            transfer = self.transfer(transfer_id)
            remaining = transfer.amount - transfer.amount_reversed
            if remaining <= 0:
                raise errors.invalid_request(
                    f"Transfer {transfer_id} has already been fully reversed.", code="transfer_already_reversed"
                )
            amount = remaining if amount is None else amount
            check_amount_units(amount, transfer.currency)
            if amount > remaining:
                raise errors.invalid_request(
                    f"Reversal amount ({format_major(amount, transfer.currency)} {transfer.currency}) is greater "
                    f"than the unreversed amount of the transfer ({format_major(remaining, transfer.currency)} "
                    f"{transfer.currency})",
                    param="amount",
                    code="amount_too_large",
                )
            account = self.accounts[transfer.destination]
            held = account.balance.get(transfer.currency, 0)
            if amount > held:
                # Stripe refuses it with this code; the wording is the sandbox's.
                currency = transfer.currency
                raise errors.invalid_request(
                    f"Insufficient funds in the destination account {account.id} ({format_major(held, currency)} "
                    f"{currency}) to reverse {format_major(amount, currency)} {currency}.",
                    code="balance_insufficient",
                )
            reversal = TransferReversal(
                id=self.new_id("trr"),
                transfer=transfer.id,
                amount=amount,
                currency=transfer.currency,
                created=self.clock.timestamp(),
                metadata=metadata,
                destination_payment_refund=self.new_id("pyr"),
            )
            reversal.balance_transaction = self._new_balance_transaction(
                amount=amount,
                fee=0,
                currency=transfer.currency,
                kind="transfer_refund",
                reporting_category="transfer_reversal",
                source=reversal.id,
                description=description,
            ).id
            account.balance[transfer.currency] = held - amount
            transfer.reversals.append(reversal)
            self.transfer_reversals[reversal.id] = reversal
            self.emit("transfer.reversed", transfer)
            return reversal

    # ---- lookups --------------------------------------------------------------------------------------------

    def payment_method(self, pm_id: str) -> PaymentMethod:
        return self._get(self.payment_methods, pm_id, "payment_method")

    def customer(self, customer_id: str) -> Customer:
        return self._get(self.customers, customer_id, "customer")

    def payment_intent(self, pi_id: str) -> PaymentIntent:
        return self._get(self.payment_intents, pi_id, "payment_intent")

    def charge(self, charge_id: str) -> Charge:
        return self._get(self.charges, charge_id, "charge")

    def refund(self, refund_id: str) -> Refund:
        return self._get(self.refunds, refund_id, "refund")

    def transfer(self, transfer_id: str) -> Transfer:
        return self._get(self.transfers, transfer_id, "transfer")

    def account(self, account_id: str) -> Account:
        return self._get(self.accounts, account_id, "account")

    def transfer_reversal(self, transfer_id: str, reversal_id: str) -> TransferReversal:
        reversal = self._get(self.transfer_reversals, reversal_id, "transfer_reversal")
        if reversal.transfer != transfer_id:
            raise errors.no_such("transfer_reversal", reversal_id, param="id")
        return reversal

    def balance_transaction(self, txn_id: str) -> BalanceTransaction:
        return self._get(self.balance_transactions, txn_id, "balance_transaction")

    def dispute(self, dispute_id: str) -> Dispute:
        return self._get(self.disputes, dispute_id, "dispute")

    def _get(self, store: dict[str, Any], object_id: str, kind: str) -> Any:
        with self.lock:
            found = store.get(object_id)
        if found is None:
            raise errors.no_such(kind, object_id, param="id")
        return found

    def find(self, object_id: str) -> Any | None:
        """Any object by id (for `expand`)."""
        with self.lock:
            for store in self._stores():
                if object_id in store:
                    return store[object_id]
        return None

    def select(self, store: dict[str, Any], keep: Callable[[Any], bool] = lambda _: True) -> list[Any]:
        """Matching objects, newest first (Stripe's list order)."""
        with self.lock:
            return [obj for obj in reversed(list(store.values())) if keep(obj)]

    def to_json(self, obj: Any) -> dict[str, Any]:
        if isinstance(obj, Refund):
            self.settle_refunds()
        if isinstance(obj, BalanceTransaction):
            return obj.to_stripe(self.clock.timestamp())
        if isinstance(obj, Dispute):
            with self.lock:
                return obj.to_stripe(self)
        with self.lock:
            return obj.to_stripe()

    # ---- ground truth -----------------------------------------------------------------------------------------

    def charge_records(self) -> list[dict[str, Any]]:
        """Every charge attempt the sandbox made, oldest first: the reference for invariant checks."""
        with self.lock:
            return [
                {
                    "charge_id": c.id,
                    "payment_intent": c.payment_intent,
                    "amount": c.amount,
                    "currency": c.currency,
                    "status": c.status,
                    "amount_refunded": c.amount_refunded,
                    "failure_code": c.failure_code,
                    "decline_code": c.decline_code,
                    "payment_method": c.payment_method,
                    "transfer_group": c.transfer_group,
                    "metadata": dict(c.metadata),
                    "idempotency_key": c.idempotency_key,
                    "created": c.created,
                }
                for c in self.charges.values()
            ]

    def transfer_records(self) -> list[dict[str, Any]]:
        """Every transfer the sandbox made, oldest first (invariant checks: at most one per payment order)."""
        with self.lock:
            return [
                {
                    "transfer_id": t.id,
                    "amount": t.amount,
                    "currency": t.currency,
                    "destination": t.destination,
                    "transfer_group": t.transfer_group,
                    "source_transaction": t.source_transaction,
                    "amount_reversed": t.amount_reversed,
                    "metadata": dict(t.metadata),
                    "idempotency_key": t.idempotency_key,
                    "created": t.created,
                }
                for t in self.transfers.values()
            ]

    def account_records(self) -> list[dict[str, Any]]:
        """Every connected account with its capabilities, restriction and balance per currency."""
        with self.lock:
            return [
                {
                    "account_id": a.id,
                    "capabilities": dict(a.capabilities),
                    "disabled_reason": a.disabled_reason,
                    "balance": dict(a.balance),
                }
                for a in self.accounts.values()
            ]

    def successful_charges_by(self, metadata_key: str) -> dict[str, list[str]]:
        """metadata value → ids of succeeded charges (invariant 1: at most one per payment_order_id)."""
        found: dict[str, list[str]] = {}
        for record in self.charge_records():
            if record["status"] == "succeeded" and metadata_key in record["metadata"]:
                found.setdefault(record["metadata"][metadata_key], []).append(record["charge_id"])
        return found

    def snapshot(self) -> dict[str, list[Any]]:
        """Copies of every record, oldest first, for the settlement export."""
        with self.lock:
            return {
                name: [copy.copy(obj) for obj in store.values()]
                for name, store in (
                    ("payment_intents", self.payment_intents),
                    ("charges", self.charges),
                    ("refunds", self.refunds),
                    ("accounts", self.accounts),
                    ("transfers", self.transfers),
                    ("transfer_reversals", self.transfer_reversals),
                    ("balance_transactions", self.balance_transactions),
                )
            }

    # ---- webhook events (psp_sandbox/webhooks.py) --------------------------------------------------------------

    def emit(self, event_type: str, obj: Any, account: str | None = None) -> None:
        """One event of `obj` as it is now (its Stripe JSON), to whoever listens (on_event). Refunds and disputes
        call it the same way: `self.emit("charge.refunded", charge)`."""
        if self.on_event is not None:
            self.on_event(event_type, obj if isinstance(obj, dict) else self.to_json(obj), account)

    def emit_intent(self, pi: PaymentIntent) -> None:
        """The event of a PaymentIntent's new status (none for a status Stripe sends none for)."""
        kind = _INTENT_EVENTS.get(pi.status)
        if pi.status == "requires_payment_method" and pi.last_payment_error:
            kind = "payment_intent.payment_failed"
        if kind:
            self.emit(kind, pi)

    def _bank_payout(self, account: Account, amount: int, currency: str) -> dict[str, Any]:
        """The connected account's bank payout (Stripe JSON; the sandbox keeps no Payout object)."""
        now = self.clock.timestamp()
        return {"id": self.new_id("po"), "object": "payout", "amount": amount, "currency": currency,
                "arrival_date": now, "created": now, "status": "paid", "method": "standard", "type": "bank_account",
                "failure_code": None, "failure_message": None, "destination": self.new_id("ba"),
                "metadata": {}}


_INTENT_EVENTS = {"succeeded": "payment_intent.succeeded", "processing": "payment_intent.processing",
                  "requires_action": "payment_intent.requires_action", "canceled": "payment_intent.canceled"}
