"""The per-file report: counts and amounts per category, then one entry per discrepancy (JSON, CSV and an HTML
page, functions/recon/html.py). `upload` is how every recon report reaches the settlement bucket.

Discrepancy entries are spooled to a temporary file as they come, so a file full of discrepancies does not
grow the run's memory; the JSON and CSV renderings stream from it.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from functions.recon import html
from functions.recon.outcomes import Category, Outcome
from functions.shared import aws
from functions.shared.money import Money

CSV_COLUMNS = ["record", "category", "count", "currency", "amount", "payment_order_id", "checkout_id", "psp_reference",
               "our_amount", "our_currency", "their_amount", "their_currency", "explanation", "line",
               "row_kind", "fix", "unexplained"]


@dataclass
class ReportBuilder:
    header: dict[str, Any]
    counts: dict[Category, int] = field(default_factory=lambda: dict.fromkeys(Category, 0))
    amounts: dict[Category, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    unexplained: int = 0
    fixed: int = 0
    _spool: IO[str] = field(init=False)

    def __enter__(self) -> ReportBuilder:
        self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by __exit__
        return self

    def __exit__(self, *exc: object) -> None:
        self._spool.close()

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.category] += outcome.count
        money = outcome.theirs if outcome.theirs is not None else outcome.ours
        if money is not None:
            self.amounts[outcome.category][money.currency] += money.minor
        if outcome.review:
            self.unexplained += 1
        if outcome.fix:
            self.fixed += 1
        if outcome.is_discrepancy:
            self._spool.write(json.dumps(outcome.to_dict()) + "\n")

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, Any]:
        return {
            **self.header,
            "total": self.rows,
            "unexplained": self.unexplained,
            "fixed": self.fixed,
            "categories": {
                category.value: {
                    "count": self.counts[category],
                    "amounts": {cur: Money(minor, cur).to_major()
                                for cur, minor in sorted(self.amounts.get(category, {}).items())},
                }
                for category in Category
            },
        }

    def _entries(self) -> Any:
        self._spool.flush()
        self._spool.seek(0)
        for line in self._spool:
            yield line.rstrip("\n")

    def write_json(self, out: IO[str]) -> None:
        summary = json.dumps(self.summary(), indent=1)
        out.write(summary[:-1].rstrip() + ',\n "discrepancies": [')
        for i, entry in enumerate(self._entries()):
            out.write(("\n  " if i == 0 else ",\n  ") + entry)
        out.write("\n ]\n}\n")

    def write_csv(self, out: IO[str]) -> None:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for category, values in self.summary()["categories"].items():
            writer.writerow({"record": "summary", "category": category, "count": values["count"]})
            for currency, amount in values["amounts"].items():
                writer.writerow({"record": "amount", "category": category, "currency": currency, "amount": amount})
        for entry in self._entries():
            writer.writerow({"record": "discrepancy", **json.loads(entry)})

    def write_html(self, out: IO[str]) -> None:
        summary = self.summary()
        header = {name: summary[name] for name in ("psp", "file_name", "total", "unexplained", "fixed")
                  if name in summary}
        html.render(out, f"Settlement reconciliation {summary.get('file_name', '')}".strip(), header,
                    {category.value: {"count": self.counts[category],
                                      "amounts": dict(self.amounts.get(category, {}))} for category in Category})


def upload(bucket: str, key: str, write: Callable[[IO[str]], None], content_type: str) -> None:
    """Write a report through a temporary file (not memory) and upload it."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
        write(out)
        out.flush()
        out.buffer.seek(0)
        aws.client("s3").upload_fileobj(out.buffer, bucket, key, ExtraArgs={"ContentType": content_type})
