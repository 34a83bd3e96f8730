"""The Adyen adapter (functions/shared/psp_port.py): the only module that imports `Adyen`.

Checkout API v71 through Adyen's Python library: `/payments` for our key `charge:<checkout_id>:<CURRENCY>` (the
same as Stripe's), `/payments/{pspReference}/refunds` for `refund:<refund_id>`, `/payments/{pspReference}/cancels`,
and HMAC-signed notifications verified with `Adyen.util`. The `Idempotency-Key` sent is `wire_key(...)`: a UUIDv5 of
the environment, the merchant account and our key (Adyen takes 64 characters at most and scopes keys per company
account, so two merchant accounts of one company must not share a key).

- resultCode Authorised: succeeded; Refused, Cancelled, or Error with a refusalReason: failed, with the reason
  (docs/decisions.md, 2026-12-06); a redirect or a 3-D Secure step: pending with the action; 5xx, 429, 401/403, a
  timeout, a lost answer: PspTransientError.
- A shopper action (RedirectShopper, IdentifyShopper, ChallengeShopper) is pending with Adyen's `action` object
  (`ChargeResult.adyen_action`); the buyer's result comes back as `details`, which only we may send
  (`submit_details`: `/payments/details` under `details:<charge_key>:<action_id>`).
- The look-up of an unknown outcome is the same request replayed under the same key: Adyen answers a processed
  key with its first answer and never processes it twice. Checkout has no search of payments by our reference,
  so past the key's lifetime (31 days today, 7 in Adyen's older page; KEY_SAFE_AGE keeps under both) a replay
  could charge again: the charge is then PspOutcomeUnknown, for a human and recon (settlement files, the
  AUTHORISATION notification) to decide, never charged blind.
- Refunds and cancels answer `received`: their outcome comes in a REFUND or CANCELLATION notification.
"""

from __future__ import annotations

import binascii
import json
import re
import uuid
from datetime import timedelta
from typing import Any

import Adyen
from Adyen.services.checkout import ModificationsApi, PaymentsApi

from functions.shared import breaker, clock
from functions.shared.adyen_units import (  # noqa: F401 - ADYEN_EXPONENTS re-exported: it was defined here
    ADYEN_EXPONENTS,
    adyen_amount,
    from_adyen_amount,
)
from functions.shared.errors import PspOutcomeUnknown, PspPermanentError, PspTransientError
from functions.shared.models import ChargeWork
from functions.shared.money import Money, MoneyError
from functions.shared.names import charge_idempotency_key, refund_idempotency_key
from functions.shared.psp_port import (
    FAILED,
    PENDING,
    REFUND_REFUSED,
    SUCCEEDED,
    ChargeResult,
    RefundResult,
    WebhookForAnotherAccount,
    WebhookSignatureInvalid,
)

PSP_NAME = "adyen"
CHECKOUT_VERSION = "v71"
TEST, LIVE = "test", "live"
_LIVE_PREFIX = re.compile(r"^[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*$")  # the prefix of the company account's live URLs
MAX_KEY_CHARS = 64  # Adyen's limit on Idempotency-Key (docs.adyen.com/development-resources/api-idempotency)
_KEY_NAMESPACE = uuid.UUID("6f1c3a52-8a2e-5d4b-9c1e-2b7f0e4d9a61")  # fixed for ever: changing it re-keys everything
KEY_SAFE_AGE = timedelta(days=6)  # Adyen keeps a key at least 31 days (7 in its older page): replays are safe within
IN_FLIGHT_ERROR = "704"  # "request already processed or in progress": the key's first request is still running

# Adyen's units (its currency table) are functions/shared/adyen_units.py: pure, so the API checks with them.

_PENDING_CODES = {"Pending", "Received", "RedirectShopper", "IdentifyShopper", "ChallengeShopper",
                  "PresentToShopper", "AuthenticationNotRequired", "AuthenticationFinished"}


def key_aged(work: ChargeWork) -> bool:
    return _aged(work.first_attempt_at)


def refund_key_aged(refund: dict[str, Any]) -> bool:
    """Past KEY_SAFE_AGE since the refund's first PSP attempt (the refund item's `psp_attempted_at`)."""
    return _aged(str(refund.get("psp_attempted_at") or ""))


def _aged(first_attempt_at: str) -> bool:
    return bool(first_attempt_at) and clock.now() - clock.parse_iso(first_attempt_at) > KEY_SAFE_AGE


def checkout_base_for(environment: str, live_prefix: str = "") -> str:
    """Checkout's base URL with its version: Adyen's test endpoint, or the company account's live endpoint, whose
    prefix Adyen gives in the live Customer Area (Developers > API URLs; docs.adyen.com/development-resources/
    live-endpoints). ValueError for anything else: a wrong environment must fail at start, never send."""
    if environment == TEST:
        return f"https://checkout-test.adyen.com/{CHECKOUT_VERSION}"
    if environment == LIVE and _LIVE_PREFIX.match(live_prefix or ""):
        return f"https://{live_prefix}-checkout-live.adyenpayments.com/checkout/{CHECKOUT_VERSION}"
    raise ValueError(f"Adyen environment {environment!r} with live prefix {live_prefix!r}: "
                     "expected 'test', or 'live' with the company account's live URL prefix")


def wire_key(environment: str, merchant_account: str, key: str) -> str:
    """The Idempotency-Key sent for our `key`: a UUIDv5 (36 characters, under Adyen's 64) of the environment, the
    merchant account and the key. Deterministic, so a retry replays; distinct per merchant account, whose keys
    Adyen keeps in one company-wide space."""
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{environment}|{merchant_account}|{key}"))


class AdyenPsp:
    """Adyen's Checkout API for one merchant account. `environment`: test (the default) or live with the company
    account's `live_prefix`; `checkout_base` overrides the URL they give (the sandbox's
    http://127.0.0.1:<port>/v71)."""

    def __init__(self, api_key: str, merchant_account: str, *, environment: str = TEST, live_prefix: str = "",
                 checkout_base: str = "", return_url: str = "https://example.invalid/return",
                 timeout_s: float = 8.0):
        default_base = checkout_base_for(environment, live_prefix)  # validates both, even with an override
        if not merchant_account:
            raise ValueError("an Adyen merchant account is required")
        client = Adyen.AdyenClient(xapikey=api_key, platform=environment, live_endpoint_prefix=live_prefix or None,
                                   http_timeout=timeout_s, http_force="requests")
        self.environment, self.merchant_account, self.return_url = environment, merchant_account, return_url
        self.live_prefix = live_prefix
        self._payments, self._modifications = PaymentsApi(client=client), ModificationsApi(client=client)
        self._payments.baseUrl = self._modifications.baseUrl = (checkout_base or default_base).rstrip("/")

    @property
    def account_id(self) -> str:
        """The account our idempotency keys belong to (`wire_key`'s namespace, and the region the live prefix
        names): a charge or refund first sent under one is never sent under another (the executor and the refund
        worker keep it from the first call)."""
        return f"{self.environment}|{self.live_prefix}|{self.merchant_account}"

    def _key(self, key: str) -> str:
        return wire_key(self.environment, self.merchant_account, key)

    # -- charges -----------------------------------------------------------------------------------

    def charge(self, work: ChargeWork, *, look_up_first: bool = False, generation: int = 0) -> ChargeResult:
        """Authorise the charge at most once. `look_up_first` changes nothing here: every call is the same request
        under the same key, which is Adyen's look-up (the module's docstring)."""
        if key_aged(work):
            raise PspOutcomeUnknown(f"{work.charge_key}: first tried {work.first_attempt_at}, past Adyen's key "
                                    "lifetime; Checkout cannot find a payment by reference")
        request = {
            "merchantAccount": self.merchant_account,
            "amount": adyen_amount(work.amount),
            "reference": work.charge_key,
            "paymentMethod": payment_method(work.payment_method),
            "returnUrl": work.return_url or self.return_url,
            # captured at once, whatever the merchant account's default: an authorisation alone would book SUCCESS
            # (and pay sellers) on money Adyen has not taken. A capture that fails anyway: CAPTURE_FAILED, reviewed
            "captureDelayHours": 0,
            "metadata": {"checkout_id": work.checkout_id},
            **native_threeds(work.adyen_browser),
        }
        key = self._key(charge_idempotency_key(work.checkout_id, work.currency, generation))
        answer = self._call(lambda: self._payments.payments(request, idempotency_key=key))
        return _checked(answer, work)

    def look_up(self, work: ChargeWork) -> ChargeResult | None:
        """The same request replayed under the same key: the first answer if Adyen processed it. Never None: a
        request that never reached Adyen is made now, which is what the unknown outcome's retry wanted."""
        return self.charge(work, look_up_first=True)

    def submit_details(self, work: ChargeWork, details: dict[str, Any], action_id: str) -> ChargeResult:
        """The buyer's answer to a shopper action (`state.data.details` from Drop-in's onAdditionalDetails: a
        3-D Secure 2 `threeDSResult`, a redirect's `redirectResult`) sent to `/payments/details`, which decides the
        payment: Adyen authorises nothing until it gets them (docs.adyen.com/api-explorer/Checkout/71/post/payments/
        details). Under the key `details:<charge_key>:<action_id>` (the action they answer: a challenge after a
        fingerprint is a second request): a retry replays Adyen's first answer, and an action's details never
        change once recorded (the API keeps the first), so the request under a key is always the same. Past
        KEY_SAFE_AGE since the charge's first attempt nothing is sent (PspOutcomeUnknown). The amount is checked as
        for `charge`."""
        if key_aged(work):
            raise PspOutcomeUnknown(f"{work.charge_key}: first tried {work.first_attempt_at}, past Adyen's key "
                                    "lifetime; its details are not replayed")
        request = {"details": dict(details)}
        key = self._key(f"details:{work.charge_key}:{action_id}")
        answer = self._call(lambda: self._payments.payments_details(request, idempotency_key=key))
        return _checked(answer, work)

    def cancel_abandoned(self, psp_reference: str, work: ChargeWork) -> ChargeResult:
        """Ask Adyen to cancel the payment; it answers `received` and the CANCELLATION notification decides, so
        the charge stays pending here."""
        request = {"merchantAccount": self.merchant_account, "reference": f"cancel:{work.charge_key}"}
        answer = self._call(lambda: self._modifications.cancel_authorised_payment_by_psp_reference(
            request, psp_reference, idempotency_key=self._key(f"cancel:{psp_reference}")))
        return ChargeResult(PENDING, psp_reference, f"cancel_{answer.get('status', '')}")

    # -- refunds ------------------------------------------------------------------------------------

    def refund(self, refund: dict[str, Any], order: dict[str, Any], *, look_up_first: bool) -> RefundResult:
        """Our refund on the order's payment under `refund:<refund_id>` (a replay is the look-up, as for charges).
        Adyen answers `received`; the REFUND notification says whether it succeeded.

        `refused` (which frees the refund's amount) only when certain: the first attempt (no earlier one recorded,
        not a look-up) and a 4xx carrying Adyen's `errorCode`. The same answer to a retry may be about our own
        earlier refund (the key's first answer lost, or pruned), so it is PspOutcomeUnknown; a 4xx without an
        errorCode is no answer of Adyen's (a proxy, a wrong URL): transient. Past KEY_SAFE_AGE since the first
        attempt a replay could refund twice: PspOutcomeUnknown, never sent."""
        if refund_key_aged(refund):
            raise PspOutcomeUnknown(f"refund {refund['refund_id']}: first tried {refund['psp_attempted_at']}, past "
                                    "Adyen's key lifetime; Checkout cannot find a refund by reference")
        retry = look_up_first or bool(refund.get("psp_attempted_at"))
        amount = Money(int(refund["amount_minor"]), refund["currency"])
        request = {"merchantAccount": self.merchant_account, "amount": adyen_amount(amount),
                   "reference": refund["refund_id"]}
        key = self._key(refund_idempotency_key(refund["refund_id"]))
        try:
            answer = self._call(lambda: self._modifications.refund_captured_payment(
                request, order["psp_reference"], idempotency_key=key))
        except PspPermanentError as refused:
            if retry:
                raise PspOutcomeUnknown(f"refund {refund['refund_id']} refused on a retry ({refused.message}): "
                                        "our earlier attempt may have made it") from None
            return RefundResult(REFUND_REFUSED, refund_id=refund["refund_id"], failure_code=refused.code,
                                failure_reason=refused.message)
        try:
            made = from_adyen_amount(answer.get("amount") or {})
        except MoneyError as error:
            raise PspOutcomeUnknown(f"{answer.get('pspReference')}: refund amount {answer.get('amount')!r}: {error}") \
                from None
        if made != amount:
            raise PspOutcomeUnknown(f"{answer.get('pspReference')} refunds {made}, our refund is {amount}")
        return RefundResult(str(answer.get("status")), str(answer.get("pspReference")), str(answer.get("reference")))

    # -- notifications ----------------------------------------------------------------------------------

    def verify_webhook(self, payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
        """The notification, if every item carries a valid `additionalData.hmacSignature` for our HMAC key (hex)
        and names our merchant account (else WebhookForAnotherAccount: one company's HMAC key may sign several
        accounts' notifications). `verified_notification` below, all or nothing."""
        body, others = verified_notification(payload, secret, self.merchant_account)
        if others:
            raise WebhookForAnotherAccount(f"a notification for {others[0]!r}, our merchant account is "
                                           f"{self.merchant_account!r}")
        return body

    # -- the one place a call goes out ------------------------------------------------------------------

    @staticmethod
    def _call(send: Any) -> dict[str, Any]:
        """Send; Adyen's answer as a dict, or its failure as our error. A refusal (PspPermanentError) is a 400, 404
        or 422 whose body carries Adyen's `errorCode`; without one the answer is not Adyen's (a proxy, a wrong
        URL). Unclear means transient: retried, the retry replays the key. Each call tells Adyen's circuit breaker
        whether Adyen answered (unreachable, no status or a 5xx: down)."""
        breaker.call_starting(PSP_NAME)
        try:
            result = send()
        except OSError as error:  # requests' timeouts and connection errors, a lost answer included
            breaker.record_call(PSP_NAME, down=True, reason=f"{type(error).__name__}: no answer")
            raise PspTransientError(f"Adyen unreachable: {type(error).__name__}") from None
        except Adyen.AdyenError as error:
            status = int(error.status_code) if str(error.status_code).isdigit() else 0
            breaker.record_call(PSP_NAME, down=status == 0 or status >= 500, reason=f"HTTP {status or 'none'}")
            detail = error.message.get("message") if isinstance(error.message, dict) else str(error.message)
            if status in (400, 404, 422) and error.error_code and error.error_code != IN_FLIGHT_ERROR:
                raise PspPermanentError(f"Adyen refused the request ({status}): {detail}",
                                        code=f"adyen_{error.error_code}") from None
            raise PspTransientError(f"Adyen answered {status or 'nothing'}: {detail}") from None
        breaker.record_call(PSP_NAME, down=False)
        return result.message if isinstance(result.message, dict) else {}


def native_threeds(browser: str) -> dict[str, Any]:
    """With the buyer's browser and the storefront's origin (schemas.AdyenBrowser, as the charge stored it): ask
    for native 3-D Secure 2 (Drop-in runs the issuer's fingerprint and challenge in the page; Adyen may still choose
    its redirect flow). Without them nothing is asked and a challenged buyer takes Adyen's redirect flow. The same
    stored value gives the same request on every attempt, as a replay under the key needs."""
    if not browser:
        return {}
    try:
        sent = json.loads(browser)
        return {"browserInfo": dict(sent["browserInfo"]), "origin": str(sent["origin"]), "channel": "Web",
                "authenticationData": {"threeDSRequestData": {"nativeThreeDS": "preferred"}}}
    except (ValueError, KeyError, TypeError):
        raise PspPermanentError("the buyer's browser stored for Adyen is not readable",
                                code="payment_method_invalid") from None


def payment_method(value: str) -> dict[str, Any]:
    """The charge's payment method: the `paymentMethod` object Adyen's Drop-in produced (JSON, card fields encrypted
    in the browser), or a stored payment method's id."""
    if value.startswith("{"):
        try:
            method = json.loads(value)
        except ValueError:
            raise PspPermanentError("the Adyen payment method is not JSON", code="payment_method_invalid") from None
        if isinstance(method, dict):
            return method
    return {"type": "scheme", "storedPaymentMethodId": value}


def _checked(answer: dict[str, Any], work: ChargeWork) -> ChargeResult:
    """The payment's outcome, once its amount (when Adyen returns it) is the charge's: another amount is money our
    books do not say, and a human looks."""
    if answer.get("amount"):
        try:
            charged = from_adyen_amount(answer["amount"])
        except MoneyError as error:
            raise PspOutcomeUnknown(f"{answer.get('pspReference')}: {error}") from error
        if charged != work.amount:
            raise PspOutcomeUnknown(f"{answer.get('pspReference')} is for {charged}, the charge for {work.amount}")
    return result_of(answer)


def result_of(answer: dict[str, Any]) -> ChargeResult:
    code, reference = str(answer.get("resultCode", "")), str(answer.get("pspReference", ""))
    if code == "Authorised":
        return ChargeResult(SUCCEEDED, reference, code)
    if code in ("Refused", "Cancelled") or (code == "Error" and answer.get("refusalReason")):
        reason = str(answer.get("refusalReason") or code)
        return ChargeResult(FAILED, reference, code, failure_code=_slug(reason), failure_reason=reason)
    if code in _PENDING_CODES:
        action = answer.get("action") or {}
        return ChargeResult(PENDING, reference, code, action=str(action.get("type", "")),
                            redirect_url=str(action.get("url", "")),
                            adyen_action=json.dumps(action, sort_keys=True, separators=(",", ":")) if action else "")
    raise PspOutcomeUnknown(f"Adyen resultCode {code!r} for {reference}")


def _slug(reason: str) -> str:
    return "_".join(reason.lower().split()) or "refused"


# What Adyen's HMAC signs of a notification item: only these may decide anything (functions/webhooks/adyen.py).
SIGNED_FIELDS = ("pspReference", "originalReference", "merchantAccountCode", "merchantReference", "amount",
                 "eventCode", "success")


def verified_notification(payload: bytes, hmac_key: str, merchant_account: str
                          ) -> tuple[dict[str, Any], list[str]]:
    """(the notification, the other merchant accounts its items name), if every item carries a valid
    `additionalData.hmacSignature` for our HMAC key (hex); else WebhookSignatureInvalid, whose message never quotes
    the body. Checked with Adyen's library (`Adyen.util.is_valid_hmac_notification`). Adyen signs pspReference,
    originalReference, merchantAccountCode, merchantReference, amount, eventCode and success only: the rest of an
    item (reason, eventDate, additionalData) is not protected and must not decide anything."""
    try:
        body = json.loads(payload)
    except ValueError:
        raise WebhookSignatureInvalid("the notification is not JSON") from None
    items = body.get("notificationItems") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise WebhookSignatureInvalid("no notificationItems")
    others: list[str] = []
    for entry in items:
        item = entry.get("NotificationRequestItem") if isinstance(entry, dict) else None
        if not isinstance(item, dict) or not _signed(item, hmac_key):
            raise WebhookSignatureInvalid("a notification item is not signed with our HMAC key")
        if item.get("merchantAccountCode") != merchant_account:
            others.append(str(item.get("merchantAccountCode")))
    return body, others


def notification_items(body: dict[str, Any], merchant_account: str) -> list[dict[str, Any]]:
    """The verified notification's items for our merchant account, each reduced to what Adyen signs (the
    unsigned `reason` kept as text only, for a failure's message; additionalData never: it may carry card
    details)."""
    items = [entry["NotificationRequestItem"] for entry in body["notificationItems"]]
    return [{**{name: item[name] for name in SIGNED_FIELDS if name in item},
             "reason": str(item.get("reason") or "")[:200]}
            for item in items if item.get("merchantAccountCode") == merchant_account]


def _signed(item: dict[str, Any], hmac_key: str) -> bool:
    signature = (item.get("additionalData") or {}).get("hmacSignature")
    if not isinstance(signature, str) or not signature:
        return False
    try:
        return bool(Adyen.util.is_valid_hmac_notification(item, hmac_key))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return False
