"""What the Adyen sandbox knows: payments, refunds, cancels and idempotency keys, on the shared simulated clock.

Card payments take Adyen's test values for the Checkout-encrypted fields (`encryptedCardNumber: test_<PAN>`,
`encryptedExpiryMonth: test_03`, `encryptedExpiryYear: test_2030`, `encryptedSecurityCode: test_737`): the card
number is checked (Luhn) and dropped at once, only its last four digits are kept (Adyen's `cardSummary`). The
outcome is chosen as at Adyen's test platform, by `holderName` (docs.adyen.com/development-resources/testing/
result-codes): DECLINED, CARD_EXPIRED, ... Anything else that is not a test value cannot be decrypted: refused.

A test value may also come "encrypted" as the sandbox's stand-in for Adyen's client-side encryption,
`adyenjs_sbx$` + base64 of the test value (`sandbox_encrypted`): what a browser would send through our API, which
refuses any body carrying a card number in clear (functions/shared/pan.py), as Adyen's real ciphertext carries none.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from ..clock import SimulatedClock

KEY_LIFETIME_S = 31 * 24 * 3600  # Adyen keeps a key "a minimum period of 31 days" (its API idempotency page)
TEST_PREFIX = "test_"
SANDBOX_ENCRYPTED = "adyenjs_sbx$"  # + base64 of a test_ value: the sandbox's stand-in for Adyen's ciphertext

# holderName → (resultCode, refusalReason, refusalReasonCode), from Adyen's "Values for testing refusal reasons".
TEST_HOLDER_NAMES: dict[str, tuple[str, str, str]] = {
    "DECLINED": ("Refused", "Refused", "2"),
    "REFERRAL": ("Refused", "Referral", "3"),
    "ERROR": ("Error", "Acquirer Error", "4"),
    "BLOCK_CARD": ("Refused", "Blocked Card", "5"),
    "CARD_EXPIRED": ("Refused", "Expired Card", "6"),
    "INVALID_AMOUNT": ("Refused", "Invalid Amount", "7"),
    "NOT_ENOUGH_BALANCE": ("Refused", "Not enough balance", "12"),
}
# The sandbox's own (not Adyen's test values): a payment answered `Received` (Adyen's initial state; its outcome comes
# in the AUTHORISATION notification), which is sent at once with the outcome named here.
RECEIVED_HOLDER_NAMES: dict[str, str] = {"RECEIVED": "Authorised", "RECEIVED_DECLINED": "DECLINED"}
# Adyen's 3-D Secure 2 test card (docs.adyen.com/development-resources/testing/3d-secure-2-authentication): the
# issuer challenges the buyer. Answered `ChallengeShopper` with a `threeDS2` action; nothing is authorised until
# /payments/details brings the challenge's result (`complete_challenge` plays the buyer's browser and Drop-in).
CHALLENGE_CARDS = frozenset({"4212345678910006"})
# The sandbox's own: with that card, this holderName gets a 3-D Secure 2 fingerprint first (`IdentifyShopper`, a
# `threeDS2` action of subtype fingerprint), whose details are answered with the challenge (`ChallengeShopper`, a new
# action and token): the two rounds of Adyen's native flow for an issuer that fingerprints, then challenges.
FINGERPRINT_HOLDER = "IDENTIFY"
# Native or redirect, as Adyen chooses: native 3-D Secure 2 (a `threeDS2` action Drop-in runs in the page) only when
# the request asks for it (authenticationData.threeDSRequestData.nativeThreeDS "preferred"); otherwise the redirect
# flow (`RedirectShopper`, a `redirect` action: the buyer authenticates on the issuer's page and comes back to
# returnUrl with `redirectResult`, which /payments/details takes). Adyen may still choose redirect when native was
# asked for: the sandbox's own holderName REDIRECT gives that.
REDIRECT_HOLDER = "REDIRECT"
REDIRECT_PAGE = "https://checkoutshopper-sandbox.invalid/checkoutshopper/threeDS/redirect"
NOT_AUTHENTICATED = "3D Not Authenticated"
# refusalReason → refusalReasonCode for refusals that no test holderName gives
OTHER_REFUSAL_CODES = {NOT_AUTHENTICATED: "11"}
# ISO 4217 codes the sandbox takes (Adyen's own minor units: CLP and ISK with 2 decimals).
_CODES = ("AED AUD BHD BRL CAD CHF CLP CNY CZK DKK EUR GBP HKD HUF ILS INR ISK JOD JPY KRW KWD MXN MYR NOK NZD OMR PLN "
          "RON SEK SGD THB TND USD VND ZAR")
CURRENCIES = frozenset(_CODES.split())


class AdyenApiError(Exception):
    """An Adyen error answer: `{"status", "errorCode", "message", "errorType"}`."""

    def __init__(self, status: int, error_code: str, message: str, error_type: str = "validation"):
        super().__init__(message)
        self.status, self.error_code, self.message, self.error_type = status, error_code, message, error_type

    def body(self) -> dict[str, Any]:
        return {"status": self.status, "errorCode": self.error_code, "message": self.message,
                "errorType": self.error_type}


def invalid(message: str, error_code: str = "sbx_validation") -> AdyenApiError:
    """422: a request Adyen validates and refuses (nothing done, not stored under the key). The sandbox's own
    error codes start with sbx_ where Adyen's exact code was not confirmed."""
    return AdyenApiError(422, error_code, message)


# What native 3-D Secure 2 in a browser needs besides the ask (docs.adyen.com/online-payments/3d-secure/native-3ds2/
# api-only: browserInfo's fields, the page's origin, channel Web). Whether Adyen refuses or falls back to redirect
# without them was not confirmed: the sandbox refuses, so that no test passes on a request missing them.
BROWSER_INFO_FIELDS = ("acceptHeader", "colorDepth", "javaEnabled", "language", "screenHeight", "screenWidth",
                       "timeZoneOffset", "userAgent")


def _native_requirements(body: dict[str, Any]) -> None:
    browser = body.get("browserInfo")
    missing = [f for f in BROWSER_INFO_FIELDS if not isinstance(browser, dict) or f not in browser]
    if missing:
        raise invalid(f"Required field 'browserInfo.{missing[0]}' is not provided for native 3D Secure 2",
                      "sbx_browser_info_required")
    if not isinstance(body.get("origin"), str) or not body["origin"].startswith("https://"):
        raise invalid("Required field 'origin' (https) is not provided for native 3D Secure 2",
                      "sbx_origin_required")
    if body.get("channel") != "Web":
        raise invalid("Field 'channel' must be Web for native 3D Secure 2 in a browser", "sbx_channel_invalid")


def fingerprint(path: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([path, body], sort_keys=True).encode()).hexdigest()


@dataclass
class Payment:
    psp_reference: str
    merchant_account: str
    reference: str
    value: int
    currency: str
    result_code: str
    card_summary: str
    refusal_reason: str = ""
    refunded: int = 0  # received refunds, in Adyen's minor units
    cancelled: bool = False
    refunds: list[str] = field(default_factory=list)
    eventual: str = ""  # a `Received` payment's outcome: Authorised, or a TEST_HOLDER_NAMES refusal
    # ChallengeShopper: the action handed to the browser, and the holderName deciding the outcome once authenticated
    action: dict[str, Any] | None = None
    holder: str = ""
    return_url: str = ""  # where a redirect sends the buyer back (the request's returnUrl)
    capture_delay_hours: int | None = None  # the request's captureDelayHours (None: the account's default)

    def settle(self) -> None:
        """A `Received` payment gets its outcome (its first answer, stored under its key, stays `Received`)."""
        if self.result_code == "Received" and self.eventual:
            self.result_code, self.refusal_reason, _code = TEST_HOLDER_NAMES.get(self.eventual,
                                                                                 ("Authorised", "", ""))

    def answer(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "pspReference": self.psp_reference, "resultCode": self.result_code, "merchantReference": self.reference,
            "amount": {"currency": self.currency, "value": self.value},
            "additionalData": {"cardSummary": self.card_summary},
        }
        if self.refusal_reason:
            code = OTHER_REFUSAL_CODES.get(self.refusal_reason) or next(
                c for name, (_, reason, c) in TEST_HOLDER_NAMES.items() if reason == self.refusal_reason)
            answer |= {"refusalReason": self.refusal_reason, "refusalReasonCode": code}
        if self.result_code in ("IdentifyShopper", "ChallengeShopper", "RedirectShopper") and self.action:
            answer["action"] = dict(self.action)
        return answer


@dataclass
class _Key:
    fingerprint: str
    created: float
    answer: tuple[int, dict[str, Any]] | None = None  # None while in flight


class Books:
    def __init__(self, clock: SimulatedClock, merchant_account: str):
        self.clock, self.merchant_account = clock, merchant_account
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.payments: dict[str, Payment] = {}
            self.modifications: list[dict[str, Any]] = []  # refunds and cancels, as answered
            self._keys: dict[tuple[str, str], _Key] = {}
            self._count = 0

    def new_reference(self) -> str:
        """A 16-character pspReference, as Adyen's."""
        with self._lock:
            self._count += 1
            return f"SBX{self._count:013d}"

    # -- idempotency ---------------------------------------------------------------------------------

    def begin(self, scope: str, key: str, fp: str) -> tuple[int, dict[str, Any]] | None:
        """The stored answer of a processed key; None when this request is the key's first. A key in flight, or
        used for another request, is refused."""
        with self._lock:
            self.prune()
            known = self._keys.get((scope, key))
            if known is None:
                self._keys[(scope, key)] = _Key(fp, self.clock.now())
                return None
            if known.fingerprint != fp:
                raise invalid("Idempotency-Key already used for a different request", "sbx_idempotency_key_reused")
            if known.answer is None:
                raise AdyenApiError(422, "704", "request already processed or in progress")
            return known.answer

    def complete(self, scope: str, key: str, answer: tuple[int, dict[str, Any]] | None) -> None:
        """Store the answer (a processed request) or forget the key (refused before anything was done)."""
        with self._lock:
            if answer is None:
                self._keys.pop((scope, key), None)
            elif (scope, key) in self._keys:
                self._keys[(scope, key)].answer = answer

    def prune(self) -> int:
        with self._lock:
            old = [k for k, v in self._keys.items() if self.clock.now() - v.created > KEY_LIFETIME_S]
            for k in old:
                del self._keys[k]
            return len(old)

    # -- the API ---------------------------------------------------------------------------------------------

    def pay(self, body: dict[str, Any]) -> Payment:
        self._merchant(body)
        value, currency = _amount(body)
        reference = body.get("reference")
        if not isinstance(reference, str) or not reference or len(reference) > 80:
            raise invalid("Required field 'reference' is not provided or longer than 80 characters")
        if not isinstance(body.get("returnUrl"), str) or not body["returnUrl"]:
            raise invalid("Required field 'returnUrl' is not provided")
        delay = body.get("captureDelayHours")
        if delay is not None and (not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= 672):
            raise invalid("Field 'captureDelayHours' is not a whole number of hours (0 to 672)")
        result_code, reason, summary = _card(body.get("paymentMethod"))
        holder = str((body.get("paymentMethod") or {}).get("holderName", ""))
        eventual = RECEIVED_HOLDER_NAMES.get(holder, "")
        if eventual:
            result_code, reason = "Received", ""
        challenged = _card_number(body.get("paymentMethod")) in CHALLENGE_CARDS
        native = (((body.get("authenticationData") or {}).get("threeDSRequestData") or {})
                  .get("nativeThreeDS") == "preferred")
        if native:
            _native_requirements(body)
        redirected = challenged and (not native or holder == REDIRECT_HOLDER)
        fingerprinted = challenged and not redirected and holder == FINGERPRINT_HOLDER
        if challenged:  # the holderName's outcome comes only after the challenge
            result_code, reason = ("RedirectShopper" if redirected else
                                   "IdentifyShopper" if fingerprinted else "ChallengeShopper"), ""
        with self._lock:
            payment = Payment(self.new_reference(), self.merchant_account, reference, value, currency, result_code,
                              summary, reason, eventual=eventual, holder=holder, return_url=body["returnUrl"],
                              capture_delay_hours=delay)
            if redirected:
                payment.action = _redirect_action(payment)
            elif challenged:
                payment.action = _threeds2_action(payment, "fingerprint" if fingerprinted else "challenge")
            self.payments[payment.psp_reference] = payment
        return payment

    def details(self, body: dict[str, Any]) -> Payment:
        """/payments/details with a `threeDSResult` (or a redirect's `redirectResult`, taken only for a payment
        answered RedirectShopper): a fingerprint's (threeDSCompInd) moves its payment to the challenge
        (`ChallengeShopper`, a new action); a challenge's (or redirect's) is authorised (transStatus Y: the holderName's
        outcome, Authorised unless a refusal is named) or refused `3D Not Authenticated` (N). An unknown or already
        used token, or a payment not awaiting such details: refused (422), nothing done."""
        details = body.get("details")
        given = [name for name in ("redirectResult", "threeDSResult")
                 if isinstance(details, dict) and isinstance(details.get(name), str)]
        field_name = given[0] if len(given) == 1 else ""
        if not field_name:
            raise invalid("Required field 'details.threeDSResult' or 'details.redirectResult' is not provided",
                          "sbx_details_invalid")
        try:
            result = json.loads(base64.b64decode(details[field_name], validate=True))
        except (binascii.Error, ValueError):
            raise invalid(f"{field_name} is not a 3-D Secure result", "sbx_details_invalid") from None
        if not isinstance(result, dict) or not (result.get("transStatus") in ("Y", "N")
                                                or result.get("threeDSCompInd") in ("Y", "N")):
            raise invalid(f"{field_name} is not a 3-D Secure result", "sbx_details_invalid")
        with self._lock:
            payment = next((p for p in self.payments.values()
                            if p.action and result.get("token") and _action_token(p.action) == result["token"]), None)
            awaited = {"IdentifyShopper": "threeDSCompInd", "ChallengeShopper": "transStatus",
                       "RedirectShopper": "transStatus"}
            answered_by = "redirectResult" if payment is not None and payment.result_code == "RedirectShopper" \
                else "threeDSResult"
            if payment is None or awaited.get(payment.result_code) not in result or field_name != answered_by:
                raise invalid("the payment is not awaiting these details (unknown or used token)",
                              "sbx_details_not_awaited")
            if payment.result_code == "IdentifyShopper":  # the fingerprint done: the issuer challenges
                payment.result_code = "ChallengeShopper"
                payment.action = _threeds2_action(payment, "challenge")
            elif result["transStatus"] == "Y":
                payment.result_code, payment.refusal_reason, _code = TEST_HOLDER_NAMES.get(
                    payment.holder, ("Authorised", "", ""))
            else:
                payment.result_code, payment.refusal_reason = "Refused", NOT_AUTHENTICATED
            return payment

    def settle(self, payment: Payment) -> None:
        with self._lock:
            payment.settle()

    def refund(self, psp_reference: str, body: dict[str, Any]) -> tuple[Payment, dict[str, Any]]:
        self._merchant(body)
        value, currency = _amount(body)
        with self._lock:
            payment = self._authorised(psp_reference)
            if currency != payment.currency:
                raise invalid(f"Refund currency {currency} is not the payment's {payment.currency}")
            if value > payment.value - payment.refunded:
                raise invalid(f"Refund of {value} exceeds the {payment.value - payment.refunded} that remains",
                              "sbx_refund_exceeds_remainder")
            payment.refunded += value
            answer = {"merchantAccount": self.merchant_account, "paymentPspReference": psp_reference,
                      "pspReference": self.new_reference(), "reference": str(body.get("reference") or ""),
                      "status": "received", "amount": {"currency": currency, "value": value}}
            payment.refunds.append(answer["pspReference"])
            self.modifications.append({"type": "refund", **answer})
            return payment, answer

    def refund_refused(self, payment: Payment, answer: dict[str, Any]) -> None:
        """A received refund Adyen then refused (its REFUND notification says success false): its amount is
        refundable again."""
        with self._lock:
            payment.refunded -= int(answer["amount"]["value"])
            answer_record = next(m for m in self.modifications if m.get("pspReference") == answer["pspReference"])
            answer_record["refused"] = True

    def cancel(self, psp_reference: str, body: dict[str, Any]) -> tuple[Payment, dict[str, Any], bool]:
        """The answer, and whether the cancel succeeds (its CANCELLATION notification): not once refunded."""
        self._merchant(body)
        with self._lock:
            payment = self._authorised(psp_reference)
            done = not payment.refunded
            payment.cancelled = payment.cancelled or done
            answer = {"merchantAccount": self.merchant_account, "paymentPspReference": psp_reference,
                      "pspReference": self.new_reference(), "reference": str(body.get("reference") or ""),
                      "status": "received"}
            self.modifications.append({"type": "cancel", **answer})
            return payment, answer, done

    def payment_records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [p.answer() | {"refunded": p.refunded, "cancelled": p.cancelled, "returnUrl": p.return_url,
                                  "captureDelayHours": p.capture_delay_hours} for p in self.payments.values()]

    def _merchant(self, body: dict[str, Any]) -> None:
        if body.get("merchantAccount") != self.merchant_account:
            raise AdyenApiError(403, "901", "Invalid Merchant Account", "security")

    def _authorised(self, psp_reference: str) -> Payment:
        payment = self.payments.get(psp_reference)
        if payment is None or payment.result_code != "Authorised":
            raise invalid("Original pspReference required for this operation", "167")
        if payment.cancelled:
            raise invalid("The payment was cancelled", "sbx_payment_cancelled")
        return payment


def _amount(body: dict[str, Any]) -> tuple[int, str]:
    amount = body.get("amount")
    if not isinstance(amount, dict):
        raise invalid("Required field 'amount' is not provided")
    value, currency = amount.get("value"), amount.get("currency")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise invalid("Invalid amount specified", "137")
    if currency not in CURRENCIES:
        raise invalid(f"Currency {currency!r} is not supported")
    return value, str(currency)


def _card(method: Any) -> tuple[str, str, str]:
    """(resultCode, refusalReason, cardSummary) of a test card; the number itself is never kept."""
    if not isinstance(method, dict) or method.get("type") != "scheme":
        raise invalid("Required object 'paymentMethod' is not provided or not a card (type scheme)")
    fields = ("encryptedCardNumber", "encryptedExpiryMonth", "encryptedExpiryYear", "encryptedSecurityCode")
    values = {name: _decrypted(method.get(name, "")) for name in fields}
    if any(not value.startswith(TEST_PREFIX) for value in values.values()):
        raise invalid("Unable to decrypt data: the sandbox takes Adyen's test_ values only", "174")
    number = values["encryptedCardNumber"][len(TEST_PREFIX):]
    if not (12 <= len(number) <= 19 and number.isdigit() and _luhn(number)):
        raise AdyenApiError(422, "sbx_invalid_card", "Invalid card number")
    summary = number[-4:]
    result_code, reason, _code = TEST_HOLDER_NAMES.get(str(method.get("holderName", "")), ("Authorised", "", ""))
    return result_code, reason, summary


def complete_challenge(action: dict[str, Any], authenticated: bool = True) -> str:
    """The buyer's browser: Drop-in runs a `threeDS2` action and gives `state.data.details`'s `threeDSResult`
    (base64 JSON with the action's token and, for a challenge, its transStatus: Y authenticated or N not; for a
    fingerprint, threeDSCompInd Y)."""
    if action.get("subtype") == "fingerprint":
        result = {"threeDSCompInd": "Y", "token": action["token"]}
    else:
        result = {"transStatus": "Y" if authenticated else "N", "token": action["token"]}
    return base64.b64encode(json.dumps(result).encode()).decode()


def complete_redirect(action: dict[str, Any], authenticated: bool = True) -> str:
    """The buyer's browser on a `redirect` action: authenticates on the issuer's page and comes back to the
    returnUrl with `redirectResult` (opaque at Adyen; here base64 JSON with the action's token and transStatus),
    which Drop-in's onAdditionalDetails gives as `state.data.details`."""
    result = {"transStatus": "Y" if authenticated else "N", "token": _action_token(action)}
    return base64.b64encode(json.dumps(result).encode()).decode()


def _redirect_action(payment: Payment) -> dict[str, Any]:
    """A `redirect` action (GET to the issuer's page); its token, carried in the url, is the one the result names."""
    token = base64.urlsafe_b64encode(b"sbx-redirect:" + hashlib.sha256(payment.psp_reference.encode()).digest()[:18])
    return {"type": "redirect", "method": "GET", "paymentMethodType": "scheme",
            "url": f"{REDIRECT_PAGE}?MD={token.decode()}"}


def _action_token(action: dict[str, Any]) -> str:
    """A threeDS2 action's token, or the one a redirect's url carries."""
    return str(action.get("token") or str(action.get("url", "")).rpartition("MD=")[2])


def _threeds2_action(payment: Payment, subtype: str) -> dict[str, Any]:
    """A `threeDS2` action with a fresh token (each round's its own: a used one is refused)."""
    seed = f"{payment.psp_reference}|{subtype}".encode()
    return {"type": "threeDS2", "subtype": subtype, "paymentMethodType": "scheme",
            "token": base64.b64encode(b"sbx-3ds2:" + hashlib.sha256(seed).digest()[:18]).decode(),
            "authorisationToken": hashlib.sha256(b"auth|" + seed).hexdigest()[:32]}


def _card_number(method: Any) -> str:
    if not isinstance(method, dict):
        return ""
    return _decrypted(method.get("encryptedCardNumber", ""))[len(TEST_PREFIX):]


def sandbox_encrypted(value: str) -> str:
    """A test value as the sandbox's stand-in for a browser-encrypted field (no card number in clear in it)."""
    return SANDBOX_ENCRYPTED + base64.b64encode(value.encode()).decode()


def _decrypted(value: Any) -> str:
    text = str(value or "")
    if not text.startswith(SANDBOX_ENCRYPTED):
        return text
    try:
        return base64.b64decode(text[len(SANDBOX_ENCRYPTED):], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _luhn(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    return sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits)) % 10 == 0
