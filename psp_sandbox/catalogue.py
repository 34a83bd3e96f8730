"""Stripe's test PaymentMethods and what confirming a PaymentIntent with each does.

Outcomes follow docs.stripe.com/testing. `pm_card_processing` is a sandbox extension (Stripe has no card test
token that leaves a card payment `processing`): the PaymentIntent stays `processing` until resolved through
`POST /_sandbox/payment_intents/{id}/resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    def details(self) -> dict[str, object]:
        return {
            "brand": self.brand,
            "country": self.country,
            "exp_month": 12,
            "exp_year": 2034,
            "funding": self.funding,
            "last4": self.last4,
        }


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
        TestCard("pm_card_processing", "visa", "credit", "0077", Outcome.PROCESSING),
    )
}


def lookup(payment_method: str) -> TestCard | None:
    return CARDS.get(payment_method)
