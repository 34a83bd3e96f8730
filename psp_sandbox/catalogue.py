"""Stripe's test cards and what confirming a PaymentIntent with each does.

Outcomes follow docs.stripe.com/testing. Each card can be named three ways, as at Stripe: its magic PaymentMethod
(`pm_card_visa`, reusable), its token (`tok_visa`, for `card[token]`) and its number (`4242424242424242`, for
`card[number]`). `pm_card_processing` is a sandbox extension (Stripe has no card test token that leaves a card
payment `processing`): the PaymentIntent stays `processing` until resolved through
`POST /_sandbox/payment_intents/{id}/resolve`. `pm_card_bypassPending` (4000000000000077) charges into the available
balance at once, as at Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"


@dataclass(frozen=True, slots=True)
class Decline:
    code: str
    decline_code: str
    message: str
    param: str | None = None


@dataclass(frozen=True, slots=True)
class TestCard:
    """A test PaymentMethod: card facts Stripe returns (never a full card number) and the confirm outcome."""

    id: str
    brand: str
    funding: str
    last4: str
    outcome: Outcome
    decline: Decline | None = None
    country: str = "US"
    exp_month: int = 12
    exp_year: int = 2034
    bypass_pending: bool = False  # the charge's funds are available at once, not two days later
    kind: str = "card"  # the PaymentMethod's type: card, or paypal (a redirect the buyer approves)

    def details(self) -> dict[str, object]:
        if self.kind == PAYPAL_KIND:
            return {"country": self.country, "payer_email": "buyer@example.com", "payer_id": "SBXPAYER0001"}
        if self.kind == SEPA_KIND:
            return {"bank_code": self.brand, "country": self.country, "last4": self.last4,
                    "fingerprint": f"sbx{self.last4}sepa"}
        if self.kind == ACH_KIND:
            return {"account_holder_type": "individual", "account_type": "checking", "bank_name": "STRIPE TEST BANK",
                    "last4": self.last4, "routing_number": self.brand, "fingerprint": f"sbx{self.last4}ach"}
        return {
            "brand": self.brand,
            "country": self.country,
            "exp_month": self.exp_month,
            "exp_year": self.exp_year,
            "funding": self.funding,
            "last4": self.last4,
        }

    def minted(self, pm_id: str, exp_month: int | None = None, exp_year: int | None = None) -> TestCard:
        """This card as the PaymentMethod `pm_id` (the outcome stays the test card's)."""
        return replace(self, id=pm_id, exp_month=exp_month or self.exp_month, exp_year=exp_year or self.exp_year)


PAYPAL_KIND = "paypal"
# docs.stripe.com/payments/paypal/accept-a-payment: the currencies Stripe accepts PayPal payments in.
PAYPAL_CURRENCIES = frozenset({"eur", "gbp", "usd", "chf", "czk", "dkk", "nok", "pln", "sek", "aud", "cad", "hkd",
                               "nzd", "sgd"})
# A PayPal PaymentMethod (POST /v1/payment_methods type=paypal): confirming it redirects the buyer to approve the
# payment; the sandbox's resolve call approves or fails it, as the buyer would on PayPal's page.
PAYPAL = TestCard("paypal", "paypal", "", "", Outcome.REQUIRES_ACTION, country="DE", kind=PAYPAL_KIND)

# Bank debits (docs.stripe.com/testing#sepa-direct-debit, #ach-direct-debit): a PaymentMethod made from one of
# these test IBANs or account numbers is `processing` once confirmed, then succeeds or fails when the sandbox clock
# has passed DEBIT_PROCESSING_SECONDS (days at a bank; Stripe's test mode shortens them to minutes).
SEPA_KIND, ACH_KIND = "sepa_debit", "us_bank_account"
DEBIT_KINDS = frozenset({SEPA_KIND, ACH_KIND})
DEBIT_CURRENCIES = {SEPA_KIND: "eur", ACH_KIND: "usd"}
_RETURNED = "The customer's bank returned the debit."
SEPA_IBANS: dict[str, TestCard] = {
    "AT611904300234573201": TestCard("sepa_ok", "19043", "", "3201", Outcome.PROCESSING, country="AT", kind=SEPA_KIND),
    "AT861904300235473202": TestCard("sepa_fail", "19043", "", "3202", Outcome.PROCESSING, country="AT", kind=SEPA_KIND,
                                     decline=Decline("insufficient_funds", "insufficient_funds", _RETURNED)),
}
ACH_ACCOUNTS: dict[str, TestCard] = {
    "000123456789": TestCard("ach_ok", "110000000", "", "6789", Outcome.PROCESSING, kind=ACH_KIND),
    "000111111113": TestCard("ach_closed", "110000000", "", "1113", Outcome.PROCESSING, kind=ACH_KIND,
                             decline=Decline("account_closed", "account_closed", _RETURNED)),
    "000111111116": TestCard("ach_none", "110000000", "", "1116", Outcome.PROCESSING, kind=ACH_KIND,
                             decline=Decline("no_account", "no_account", _RETURNED)),
    "000222222227": TestCard("ach_nsf", "110000000", "", "2227", Outcome.PROCESSING, kind=ACH_KIND,
                             decline=Decline("insufficient_funds", "insufficient_funds", _RETURNED)),
}


def iban_valid(iban: str) -> bool:
    """ISO 13616: letters to numbers, the first four characters moved to the end, mod 97 equals 1."""
    text = iban.replace(" ", "").upper()
    if not (15 <= len(text) <= 34 and text[:2].isalpha() and text[2:4].isdigit() and text.isalnum()):
        return False
    return int("".join(str(int(ch, 36)) for ch in text[4:] + text[:4])) % 97 == 1


def routing_number_valid(number: str) -> bool:
    """ABA: 3·(d1+d4+d7) + 7·(d2+d5+d8) + (d3+d6+d9) is a multiple of 10."""
    if len(number) != 9 or not number.isdigit():
        return False
    d = [int(c) for c in number]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + d[2] + d[5] + d[8]) % 10 == 0


_DECLINED = "Your card was declined."


def _declined(pm: str, last4: str, decline: Decline) -> TestCard:
    return TestCard(pm, "visa", "credit", last4, Outcome.DECLINED, decline)


CARDS: dict[str, TestCard] = {
    card.id: card
    for card in (
        TestCard("pm_card_visa", "visa", "credit", "4242", Outcome.SUCCEEDED),
        TestCard("pm_card_us", "visa", "credit", "4242", Outcome.SUCCEEDED),
        TestCard("pm_card_visa_debit", "visa", "debit", "5556", Outcome.SUCCEEDED),
        TestCard("pm_card_mastercard", "mastercard", "credit", "4444", Outcome.SUCCEEDED),
        TestCard("pm_card_amex", "amex", "credit", "8431", Outcome.SUCCEEDED),
        TestCard("pm_card_bypassPending", "visa", "credit", "0077", Outcome.SUCCEEDED, bypass_pending=True),
        _declined("pm_card_chargeDeclined", "0002", Decline("card_declined", "generic_decline", _DECLINED)),
        _declined(
            "pm_card_chargeDeclinedInsufficientFunds",
            "9995",
            Decline("card_declined", "insufficient_funds", "Your card has insufficient funds."),
        ),
        _declined("pm_card_chargeDeclinedLostCard", "9987", Decline("card_declined", "lost_card", _DECLINED)),
        _declined("pm_card_chargeDeclinedStolenCard", "9979", Decline("card_declined", "stolen_card", _DECLINED)),
        _declined("pm_card_chargeDeclinedFraudulent", "0019", Decline("card_declined", "fraudulent", _DECLINED)),
        _declined(
            "pm_card_chargeDeclinedExpiredCard",
            "0069",
            Decline("expired_card", "expired_card", "Your card has expired.", param="exp_month"),
        ),
        _declined(
            "pm_card_chargeDeclinedIncorrectCvc",
            "0127",
            Decline("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect.", param="cvc"),
        ),
        _declined(
            "pm_card_chargeDeclinedProcessingError",
            "0119",
            Decline(
                "processing_error",
                "processing_error",
                "An error occurred while processing your card. Try again in a little bit.",
            ),
        ),
        TestCard("pm_card_authenticationRequired", "visa", "credit", "3184", Outcome.REQUIRES_ACTION),
        TestCard("pm_card_threeDSecure2Required", "visa", "credit", "3220", Outcome.REQUIRES_ACTION),
        TestCard("pm_card_authenticationRequiredOnSetup", "visa", "credit", "3155", Outcome.REQUIRES_ACTION),
        TestCard("pm_card_processing", "visa", "credit", "0077", Outcome.PROCESSING),
    )
}


# docs.stripe.com/testing: the numbers Stripe.js may send as `card[number]`.
NUMBERS: dict[str, TestCard] = {
    number: CARDS[pm]
    for number, pm in (
        ("4242424242424242", "pm_card_visa"),
        ("4000056655665556", "pm_card_visa_debit"),
        ("5555555555554444", "pm_card_mastercard"),
        ("378282246310005", "pm_card_amex"),
        ("4000000000000077", "pm_card_bypassPending"),
        ("4000000000000002", "pm_card_chargeDeclined"),
        ("4000000000009995", "pm_card_chargeDeclinedInsufficientFunds"),
        ("4000000000009987", "pm_card_chargeDeclinedLostCard"),
        ("4000000000009979", "pm_card_chargeDeclinedStolenCard"),
        ("4100000000000019", "pm_card_chargeDeclinedFraudulent"),
        ("4000000000000069", "pm_card_chargeDeclinedExpiredCard"),
        ("4000000000000127", "pm_card_chargeDeclinedIncorrectCvc"),
        ("4000000000000119", "pm_card_chargeDeclinedProcessingError"),
        ("4000002760003184", "pm_card_authenticationRequired"),
        ("4000000000003220", "pm_card_threeDSecure2Required"),
        ("4000002500003155", "pm_card_authenticationRequiredOnSetup"),
    )
}

# `tok_visa` ↔ `pm_card_visa`: Stripe's test tokens mirror the magic PaymentMethods' names.
TOKENS: dict[str, TestCard] = {"tok_" + pm.removeprefix("pm_card_"): card for pm, card in CARDS.items()}


def lookup(payment_method: str) -> TestCard | None:
    return CARDS.get(payment_method)


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0
