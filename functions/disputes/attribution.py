"""How a dispute's amount is attributed to the orders of its charge (docs/decisions.md "Disputes").

A dispute names a charge (one PaymentIntent of a checkout, in one currency), which may pay several orders of
several sellers. The order named in the Dispute's metadata (`payment_order_id`), if it is one of them, takes the
whole amount; otherwise the amount is split over the orders in proportion to what each still holds (its amount
less its refunds), by largest remainder: each gets floor(amount × weight / total), and the units left over go one
each to the largest remainders (ties: the order id), so the parts are exact minor units that add up to the amount
and no part passes its order's weight.
"""

from __future__ import annotations


def attribute(amount: int, weights: dict[str, int], named: str | None = None) -> dict[str, int]:
    """order id -> its part of `amount` (every order of `weights`, zero parts included)."""
    if amount <= 0:
        raise ValueError(f"a dispute of {amount}")
    if named and named in weights:
        if amount > weights[named]:
            raise ValueError(f"dispute of {amount} passes what order {named} holds ({weights[named]})")
        return {order: amount if order == named else 0 for order in weights}
    total = sum(max(w, 0) for w in weights.values())
    if amount > total:
        raise ValueError(f"dispute of {amount} passes what the orders hold ({total})")
    parts = {order: amount * max(w, 0) // total for order, w in weights.items()}
    left = amount - sum(parts.values())
    by_remainder = sorted(weights, key=lambda o: (-(amount * max(weights[o], 0) % total), o))
    for order in by_remainder[:left]:
        parts[order] += 1
    return parts
