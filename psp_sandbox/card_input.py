"""The `card[...]` hash of `POST /v1/payment_methods` (what Stripe.js sends): checked as Stripe checks it and resolved
to a test card. Only the test card (brand, last4, outcome) and the expiry are kept: never the number or the CVC."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from . import errors
from .catalogue import NUMBERS, TOKENS, TestCard, luhn_valid

_FIELDS = frozenset({"number", "exp_month", "exp_year", "cvc", "token", "networks"})
_SECRET = secrets.token_bytes(32)  # keys the one-way mask of a card number in idempotency and fault fingerprints


@dataclass(frozen=True, slots=True)
class CardInput:
    card: TestCard
    exp_month: int | None = None
    exp_year: int | None = None


def parse_card(card: Any, *, year: int, month: int) -> CardInput:
    """`card[token]=tok_visa`, or `card[number]`, `card[exp_month]`, `card[exp_year]`, `card[cvc]`.
    (`year`, `month`): today, for the expiry check."""
    if card in (None, ""):
        raise errors.missing_param("card")
    if not isinstance(card, dict):
        raise errors.invalid_request("Invalid hash: card", param="card")
    for name in card:
        if name not in _FIELDS:
            raise errors.invalid_request(
                f"Received unknown parameter: card[{name}]", param=f"card[{name}]", code="parameter_unknown"
            )
    if card.get("token"):
        return CardInput(_token(card["token"]))
    number = re.sub(r"[\s-]", "", str(card.get("number") or ""))
    if not number:
        raise errors.missing_param("card[number]")
    if not (number.isdigit() and 12 <= len(number) <= 19 and luhn_valid(number)):
        raise _card_error("incorrect_number", "Your card number is incorrect.", "card[number]")
    exp_month, exp_year = _expiry(card, year=year, month=month)
    cvc = str(card.get("cvc") or "")
    if cvc and not re.fullmatch(r"[0-9]{3,4}", cvc):
        raise _card_error("invalid_cvc", "Your card's security code is invalid.", "card[cvc]")
    test_card = NUMBERS.get(number)
    if test_card is None:
        raise _card_error(
            "card_declined",
            "Your card was declined. Your request was in test mode, but used a non test (live) card. For a list of "
            "valid test cards, visit: https://stripe.com/docs/testing.",
            None,
            decline_code="live_mode_test_card",
        )
    return CardInput(test_card, exp_month, exp_year)


def mask_card_number(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with `card[number]` and `card[cvc]` replaced by keyed one-way digests: what the idempotency store
    and the fault draws may keep (same card → same digest, so a changed card still counts as other parameters)."""
    card = params.get("card")
    if not isinstance(card, dict) or not ({"number", "cvc"} & card.keys()):
        return params
    masked = {
        k: (hmac.new(_SECRET, str(v).encode(), hashlib.sha256).hexdigest() if k in ("number", "cvc") else v)
        for k, v in card.items()
    }
    return {**params, "card": masked}


def _token(token: Any) -> TestCard:
    test_card = TOKENS.get(str(token))
    if test_card is None:
        raise errors.no_such("token", str(token), param="card[token]", status=400)
    return test_card


def _expiry(card: dict[str, Any], *, year: int, month: int) -> tuple[int, int]:
    for name in ("exp_month", "exp_year"):
        if not card.get(name):
            raise errors.missing_param(f"card[{name}]")
    raw_month, raw_year = str(card["exp_month"]), str(card["exp_year"])
    if not raw_month.isdigit() or not 1 <= int(raw_month) <= 12:
        raise _card_error("invalid_expiry_month", "Your card's expiration month is invalid.", "card[exp_month]")
    if not raw_year.isdigit():
        raise _card_error("invalid_expiry_year", "Your card's expiration year is invalid.", "card[exp_year]")
    exp_month, exp_year = int(raw_month), int(raw_year)
    exp_year += 2000 if exp_year < 100 else 0
    if (exp_year, exp_month) < (year, month) or exp_year > year + 50:
        raise _card_error("invalid_expiry_year", "Your card's expiration year is invalid.", "card[exp_year]")
    return exp_month, exp_year


def _card_error(
    code: str, message: str, param: str | None, *, decline_code: str | None = None
) -> errors.StripeApiError:
    # Checks of the card's details, made before anything is created: not stored for the idempotency key.
    return errors.StripeApiError(
        402, "card_error", message, code=code, param=param, decline_code=decline_code, stored=False
    )
