"""The PSP port: what every PSP adapter does on the money path, and the results both adapters answer with.

Adapters: functions/shared/psp.py (Stripe, the only module importing `stripe`) and functions/shared/psp_adyen.py
(Adyen, the only module importing `Adyen`). Each maps its PSP's answers onto the same three kinds:
- certain outcomes as data: a `ChargeResult` (succeeded | failed | pending), a `RefundResult`;
- anything unclear (network, timeout, 5xx, 429): PspTransientError, retried after a look-up;
- a request the PSP refuses as invalid: PspPermanentError; an answer that contradicts our books: PspOutcomeUnknown.
ChargeResult, RefundResult and WebhookSignatureInvalid moved here from psp.py (both adapters answer with them;
psp.py re-exports them, so every existing import stays as it was).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from functions.shared.models import ChargeWork

SUCCEEDED, FAILED, PENDING = "succeeded", "failed", "pending"
# Not a PSP's answer: the charge's PSP is down and nothing was sent this attempt (functions/executor/handler.py)
PARKED = "parked"
REFUND_REFUSED = "refused"  # the PSP refused to make the refund (certain: none exists)


@dataclass(frozen=True)
class ChargeResult:
    outcome: str  # succeeded | failed | pending (| parked: the executor sent nothing, its PSP being down)
    psp_reference: str = ""
    psp_status: str = ""
    failure_code: str = ""
    failure_reason: str = ""
    charge_id: str = ""  # the PaymentIntent's latest_charge (ch_...): transfers and refunds name it
    # requires_action (3-D Secure): the PaymentIntent's client secret, which Stripe.js needs to run the challenge
    client_secret: str = ""
    # requires_action: what the buyer must do (next_action.type: use_stripe_sdk for 3-D Secure, redirect_to_url for
    # PayPal, verify_with_microdeposits for a US bank account not verified at once) and the page it happens on
    action: str = ""
    redirect_url: str = ""
    # Adyen's shopper action (3-D Secure 2, a redirect) as canonical JSON: the `action` object its answer carries,
    # which the storefront hands to Drop-in (`createFromAction`); holds nothing the buyer's browser does not get
    adyen_action: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "outcome": self.outcome, "psp_reference": self.psp_reference, "psp_status": self.psp_status,
            "failure_code": self.failure_code, "failure_reason": self.failure_reason, "charge_id": self.charge_id,
            "client_secret": self.client_secret, "action": self.action, "redirect_url": self.redirect_url,
            "adyen_action": self.adyen_action,
        }


def action_id(adyen_action: str) -> str:
    """A shopper action's id: a digest of its canonical JSON (`ChargeResult.adyen_action`). The buyer's details are
    recorded for, and sent under a key of, the action they answer: a second action (a challenge after a fingerprint)
    gets its own details and key."""
    return hashlib.sha256(adyen_action.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RefundResult:
    """A refund's state at the PSP. Stripe: pending | requires_action | succeeded | failed | canceled; Adyen:
    received (its outcome comes in a REFUND notification); either: `refused` (no refund made; failure_code says
    why)."""

    status: str
    psp_refund_id: str = ""
    refund_id: str = ""  # ours, from the Refund's metadata (Stripe) or the modification's reference (Adyen)
    failure_code: str = ""
    failure_reason: str = ""


class WebhookSignatureInvalid(Exception):
    """A webhook or notification whose signature is missing, malformed, stale, or does not sign its body."""


class WebhookForAnotherAccount(WebhookSignatureInvalid):
    """A validly signed webhook or notification about another merchant account than the adapter's (Adyen signs
    `merchantAccountCode`): never acted on. A subclass, so every caller that refuses a bad signature refuses it
    too; a receiver may instead acknowledge it (so the PSP stops resending) and drop it."""


@runtime_checkable
class PspPort(Protocol):
    """What the money path asks of a PSP. Every call is safe to repeat: charges and refunds carry idempotency keys
    derived from our ids (functions/shared/names.py), so a retry is replayed by the PSP, never done twice."""

    def charge(self, work: ChargeWork, *, look_up_first: bool = False, generation: int = 0) -> ChargeResult:
        """Charge the checkout's amount in one currency, at most once (key `charge:<checkout_id>:<CURRENCY>`)."""
        ...

    def look_up(self, work: ChargeWork) -> ChargeResult | None:
        """After an unknown outcome (timeout, lost answer): the charge the PSP made for this work, None if none."""
        ...

    def refund(self, refund: dict[str, Any], order: dict[str, Any], *, look_up_first: bool) -> RefundResult:
        """Our refund's one refund at the PSP, on the order's payment (key `refund:<refund_id>`)."""
        ...

    def cancel_abandoned(self, psp_reference: str, work: ChargeWork) -> ChargeResult:
        """Cancel a payment the buyer did not complete (a 3-D Secure challenge left open)."""
        ...

    def verify_webhook(self, payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
        """The event, if it is signed with `secret`; else WebhookSignatureInvalid. `signature` is the signature
        header (Stripe-Signature); Adyen signs each notification item inside the body and needs no header. A
        signed event about another merchant account: WebhookForAnotherAccount."""
        ...
