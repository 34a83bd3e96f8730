"""The per-file report counts every row once, whether its outcome came alone or with others of its kind."""

from __future__ import annotations

import io
import json

from functions.recon.outcomes import Category, Outcome
from functions.recon.report import ReportBuilder
from functions.shared.money import Money


def test_an_outcome_of_several_agreeing_charges_counts_each_and_lists_none() -> None:
    with ReportBuilder({"psp": "stripe"}) as report:
        report.add(Outcome(Category.MATCHED, ours=Money(3_000, "USD"), theirs=Money(3_000, "USD"), row_kind="charge",
                           count=3))
        report.add(Outcome(Category.MATCHED, "po_1", "pi_1", Money(250, "EUR"), Money(250, "EUR"), line=7,
                           row_kind="charge"))
        report.add(Outcome(Category.AMOUNT_MISMATCH, "po_2", "pi_2", Money(100, "USD"), Money(101, "USD"),
                           "settled 1.01 USD, the order is for 1.00 USD", line=9, row_kind="charge", review=True))
        summary = report.summary()
        as_json, as_csv = io.StringIO(), io.StringIO()
        report.write_json(as_json)
        report.write_csv(as_csv)

    assert summary["total"] == 5
    assert summary["unexplained"] == 1
    assert summary["categories"]["matched"] == {"count": 4, "amounts": {"EUR": "2.50", "USD": "30.00"}}
    assert summary["categories"]["amount_mismatch"] == {"count": 1, "amounts": {"USD": "1.01"}}
    assert [entry["payment_order_id"] for entry in json.loads(as_json.getvalue())["discrepancies"]] == ["po_2"]
    assert [line.split(",")[0] for line in as_csv.getvalue().splitlines()].count("discrepancy") == 1
