"""The matching rules alone: pure functions of a row and the records it names, no store and no matcher."""

from __future__ import annotations

from typing import Any

import pytest

from functions.recon import rules
from functions.recon.outcomes import Category, Outcome
from functions.recon.ports import LedgerRecords, Records
from functions.recon.rows import RowKind
from tests.recon.test_matching import block_of, row


def order(order_id: str, amount: int = 1000, **changes: Any) -> dict[str, Any]:
    return {"payment_order_id": order_id, "amount_minor": amount, "currency": "USD",
            "payment_order_status": "SUCCESS", "psp_reference": "pi_1", "charge_id": "ch_1", **changes}


def charge(line: int, gross: int, checkout: str, reference: str = "pi_1") -> Any:
    return row(line, RowKind.CHARGE, gross, checkout=checkout, ref=reference)


@pytest.mark.parametrize(("changes", "reference", "agrees"), [
    ({}, "pi_1", True),
    ({}, "ch_1", True),  # a report without the PaymentIntent names the charge
    ({"psp_reference": None}, "pi_1", True),  # nothing recorded to contradict
    ({}, "pi_2", False),
    ({"currency": "EUR"}, "pi_1", False),
    ({"payment_order_status": "EXECUTING"}, "pi_1", False),
    ({"payment_order_status": "FAILED"}, "pi_1", False),
])
def test_an_order_agrees_with_a_charge_of_its_reference_currency_and_status(changes: dict[str, Any], reference: str,
                                                                             agrees: bool) -> None:
    assert rules.order_agrees(order("po_1", **changes), "USD", reference, {"po_1"}) is agrees
    assert not rules.order_agrees(order("po_1", **changes), "USD", reference, set())  # no pay-in


def test_the_block_path_and_the_row_path_apply_the_same_rule() -> None:
    orders = {"po_1": order("po_1"), "po_2": order("po_2", 500, psp_reference="pi_2", charge_id="ch_2"),
              "po_3": order("po_3", 500, psp_reference="pi_2"), "po_4": order("po_4", psp_reference=None),
              "po_5": order("po_5", payment_order_status="EXECUTING", psp_reference="pi_5"),
              "po_6": order("po_6", psp_reference="pi_6")}
    records = Records(orders, {"co_1": {"USD": ["po_1"]}, "co_2": {"USD": ["po_2", "po_3"]},
                               "co_4": {"USD": ["po_4"]}, "co_5": {"USD": ["po_5"]}, "co_6": {"USD": ["po_6"]}},
                      LedgerRecords(paid={"po_1", "po_2", "po_3", "po_4", "po_5"}))
    rows = [charge(2, 1000, "co_1"), charge(3, 1000, "co_2", "ch_2"), charge(4, 1000, "co_4", "pi_4"),
            charge(5, 1000, "co_5", "pi_5"), charge(6, 1000, "co_6", "pi_6"), charge(7, 999, "co_1")]
    block = block_of(rows)
    groups = [rules.charge_ids(records.checkouts.get(checkout), "USD") for checkout in block.checkout_ids]
    by_block = rules.block_agreement(block, 0, len(rows), groups, records)
    by_row = []
    for each in rows:
        group = rules.charge_of(each, records)
        assert group is not None
        total = sum(o["amount_minor"] for o in group.orders)
        by_row.append(rules.charge_agrees(each, group, total, records.ledger.paid))
        outcomes = [rules.charge_order_outcome(each, o, group, total, records.ledger.paid) for o in group.orders]
        assert all(isinstance(o, Outcome) and o.category is Category.MATCHED and not o.explanation
                   for o in outcomes) is by_row[-1]
    # po_3 records only the PaymentIntent (pi_2), not the charge the row names (ch_2); po_6 has no pay-in
    assert by_block == by_row == [True, False, True, False, False, False]


def test_an_order_in_progress_asks_for_its_charge_to_be_handed_back() -> None:
    records = Records({"po_1": order("po_1", payment_order_status="NOT_STARTED")}, {"co_1": {"USD": ["po_1"]}},
                      LedgerRecords())
    each = charge(2, 1000, "co_1")
    group = rules.charge_of(each, records)
    assert group is not None
    assert rules.charge_order_outcome(each, records.orders["po_1"], group, 1000, set()) is rules.HAND_BACK
