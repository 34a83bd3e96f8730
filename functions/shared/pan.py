"""Detection of card numbers (PANs): digits that pass the Luhn check, possibly split by spaces or dashes.

The API refuses any body that carries one, before anything is parsed, logged or stored.
"""

from __future__ import annotations

import re

# 12 to 19 digits, each group separated by at most one space or dash (4242 4242-4242 4242).
_CANDIDATE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){11,18}(?![0-9])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """True when `text` holds a Luhn-valid run of 12-19 digits (spaces or dashes allowed between digits)."""
    for match in _CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group(0))
        if luhn_valid(digits) and _looks_like_pan(digits):
            return True
    return False


def _looks_like_pan(digits: str) -> bool:
    # All-zero runs pass Luhn but are no card; real PANs start with 1-9 (ISO/IEC 7812 major industry identifier).
    return digits[0] != "0"
