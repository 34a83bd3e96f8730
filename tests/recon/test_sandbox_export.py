"""The PSP sandbox's Stripe settlement export, with every discrepancy it can plant, read by the recon parser and
matched: each row is a checkout's charge, matched to the sum of that checkout's orders."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import stripe

from functions.recon import parsers
from functions.recon.closing import Window
from functions.recon.outcomes import Outcome
from functions.shared import clock
from psp_sandbox.server import SandboxServer, start_sandbox
from psp_sandbox.settlement import PLANT_KINDS, Planted, build_report
from tests.recon.test_matching import World, order, run

# What each planted discrepancy must become in our report.
EXPECTED = {
    "amount_mismatch": "amount_mismatch",
    "currency_mismatch": "currency_mismatch",
    "missing_row": "missing_in_settlement",
    "unknown_charge": "missing_in_ledger",
    "duplicate_row": "duplicate_settlement",
    "refund_not_in_ledger": "status_mismatch",
    "malformed_row": "malformed_row",
    "intent_only": "matched",  # found by its PaymentIntent
    "checkout_only": "matched",  # found by its checkout
}


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox(port=0)
    yield server
    server.stop()


def charged_world(sandbox: SandboxServer) -> tuple[World, list[datetime]]:
    """Ten checkouts of 1-3 orders, each charged once for the sum of its orders; our records of them."""
    client = stripe.StripeClient("sk_test_sandbox", base_addresses={"api": sandbox.url})
    world, created = World(), []
    for c in range(10):
        checkout, amounts = f"co_{c}", [1000 + 10 * c + j for j in range(c % 3 + 1)]
        intent = client.v1.payment_intents.create(
            params={"amount": sum(amounts), "currency": "usd", "payment_method": "pm_card_visa", "confirm": True,
                    "payment_method_types": ["card"], "transfer_group": checkout,
                    "metadata": {"checkout_id": checkout, "charge_key": f"{checkout}#USD"}},
            options={"idempotency_key": f"charge:{checkout}:USD"})
        created.append(datetime.fromtimestamp(intent.created, UTC))
        for j, amount in enumerate(amounts):
            order_id = f"po_{c}_{j}"
            world.orders[order_id] = order(order_id, amount, checkout=checkout, ref=intent.id,
                                           created_at=clock.iso(created[-1]))
            world.ledger[f"payin#{order_id}"] = {}
        if c == 0:
            refund = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 100})
            world.ledger[f"refund#{refund.id}"] = {"entries": [{"amount_minor": 100, "currency": "USD"},
                                                              {"amount_minor": -100, "currency": "USD"}]}
    charges = {charge.payment_intent: charge.id for charge in sandbox.state.snapshot()["charges"]}
    for item in world.orders.values():
        item["charge_id"] = charges[item["psp_reference"]]
    return world, created


def names(outcome: Outcome, planted: Planted, world: World) -> bool:
    ours = {i for i, item in world.orders.items() if item["checkout_id"] == planted.checkout_id}
    return outcome.checkout_id == planted.checkout_id or outcome.psp_reference == planted.payment_intent_id \
        or outcome.payment_order_id in ours


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_planted_discrepancy_is_found(sandbox: SandboxServer, seed: int) -> None:
    assert set(EXPECTED) == set(PLANT_KINDS)
    world, created = charged_world(sandbox)
    export = build_report(sandbox.state, plant=list(PLANT_KINDS), seed=seed, targets={"refund_not_in_ledger": "co_9"})
    rows = list(parsers.parse("stripe", io.BytesIO(export.to_csv().encode())))
    window = Window(min(created) - timedelta(hours=1), max(created) + timedelta(hours=1))
    outcomes = run(world, rows, window=window, now=max(created) + timedelta(hours=2))

    for planted in export.planted:
        wanted = EXPECTED[planted.kind]
        assert any(o.category.value == wanted and names(o, planted, world) for o in outcomes), \
            f"{planted.kind} on {planted.checkout_id} was not reported as {wanted}"
    # nothing else is reported
    discrepancies = [o for o in outcomes if o.is_discrepancy]
    assert all(any(o.category.value == EXPECTED[p.kind] and names(o, p, world) for p in export.planted)
               for o in discrepancies)
    # every order is reported once by a charge or the window, but those of the checkout whose row is malformed
    # (that row stands for them)
    malformed = next(p.checkout_id for p in export.planted if p.kind == "malformed_row")
    named = Counter(o.payment_order_id for o in outcomes if o.payment_order_id and o.row_kind in ("charge", "order"))
    assert set(named) == {i for i, item in world.orders.items() if item["checkout_id"] != malformed}
    assert set(named.values()) == {1}
