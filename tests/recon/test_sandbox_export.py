"""The PSP sandbox's Stripe settlement export, with every discrepancy it can plant, read by the recon parser."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import stripe

from functions.recon import parsers
from functions.recon.matching import Window
from functions.shared import clock
from psp_sandbox.server import SandboxServer, start_sandbox
from psp_sandbox.settlement import PLANT_KINDS, build_report
from tests.recon.test_matching import World, run

# What each planted discrepancy must become in our report.
EXPECTED = {
    "amount_mismatch": "amount_mismatch",
    "currency_mismatch": "currency_mismatch",
    "missing_row": "missing_in_settlement",
    "unknown_charge": "missing_in_ledger",
    "duplicate_row": "duplicate_settlement",
    "refund_not_in_ledger": "status_mismatch",
    "malformed_row": "malformed_row",
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox(port=0)
    yield server
    server.stop()


def test_every_planted_discrepancy_is_found(sandbox: SandboxServer) -> None:
    assert set(EXPECTED) == set(PLANT_KINDS)
    client = stripe.StripeClient("sk_test_sandbox", base_addresses={"api": sandbox.url})
    world = World()
    intents = []
    for i in range(10):
        order_id = f"po_{i}"
        intent = client.v1.payment_intents.create(
            params={"amount": 2500 + i, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True,
                    "payment_method_types": ["card"], "metadata": {"payment_order_id": order_id, "checkout_id": "co"}},
            options={"idempotency_key": order_id})
        intents.append(intent)
        world.orders[order_id] = {
            "payment_order_id": order_id, "checkout_id": "co", "seller_account": "s", "amount_minor": 2500 + i,
            "currency": "USD", "payment_order_status": "SUCCESS", "psp_reference": intent.id,
            "created_at": clock.iso(datetime.fromtimestamp(intent.created, UTC)),
        }
        world.ledger[f"payin#{order_id}"] = {}
    refund = client.v1.refunds.create(params={"payment_intent": intents[0].id, "amount": 100})
    world.ledger[f"refund#{refund.id}"] = {"entries": [{"amount_minor": 100, "currency": "USD"},
                                                      {"amount_minor": -100, "currency": "USD"}]}

    export = build_report(sandbox.state, plant=list(PLANT_KINDS), seed=3, targets={"refund_not_in_ledger": "po_9"})
    rows = list(parsers.parse("stripe", io.BytesIO(export.to_csv().encode())))
    created = [datetime.fromtimestamp(i.created, UTC) for i in intents]
    window = Window(min(created) - timedelta(hours=1), max(created) + timedelta(hours=1))
    outcomes = run(world, rows, window=window, now=max(created) + timedelta(hours=2))

    for planted in export.planted:
        wanted = EXPECTED[planted.kind]
        hits = [o for o in outcomes if o.category.value == wanted and
                (o.payment_order_id == planted.payment_order_id or o.psp_reference == planted.payment_intent_id)]
        assert hits, f"{planted.kind} on {planted.payment_order_id} was not reported as {wanted}"
    discrepancies = [o for o in outcomes if o.category.value != "matched"]
    assert len(discrepancies) == len(export.planted)  # nothing else is reported
    assert len(outcomes) == len(rows) + 1  # every row, plus the order whose row was left out
