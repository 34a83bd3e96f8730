"""The recon reports' HTML page (functions/recon/html.py) opened in a real headless browser (Debian's chromium,
installed by `make test`): the totals and the categories' counts and amounts it shows are the report's."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from functions.recon import internal
from functions.recon.internal import Category, Finding, InternalReport
from functions.recon.outcomes import Category as ExternalCategory
from functions.recon.report import ReportBuilder

CHROMIUM = shutil.which("chromium")


class Shown(HTMLParser):
    """What the page shows: the totals (dd data-total) and each category row's count and amounts."""

    def __init__(self) -> None:
        super().__init__()
        self.totals: dict[str, str] = {}
        self.rows: dict[str, dict[str, str]] = {}
        self.svg_rects = 0
        self._field: tuple[str, str] | None = None
        self._row: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "dd" and "data-total" in attrs:
            self._field = ("total", attrs["data-total"])
        elif tag == "tr" and "data-category" in attrs:
            self._row = attrs["data-category"]
            self.rows[self._row] = {}
        elif tag == "td" and self._row and attrs.get("class") in ("count", "amounts"):
            self._field = ("row", attrs["class"])
        elif tag == "rect":
            self.svg_rects += 1

    def handle_endtag(self, tag):
        if tag in ("dd", "td"):
            self._field = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._field and self._field[0] == "total":
            self.totals[self._field[1]] = self.totals.get(self._field[1], "") + data
        elif self._field and self._row:
            self.rows[self._row][self._field[1]] = self.rows[self._row].get(self._field[1], "") + data


def rendered_by_chromium(path: Path) -> Shown:
    """The DOM as the browser built it (`--dump-dom`), parsed."""
    assert CHROMIUM, "chromium is not installed: `make chromium` (make test installs it)"
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                          capture_output=True, text=True, timeout=60, check=True)
    shown = Shown()
    shown.feed(done.stdout)
    assert "<html" in done.stdout, done.stderr[-2000:]
    return shown


def test_the_internal_report_page_shows_its_totals_in_a_browser(tmp_path):
    report = InternalReport(findings=[
        Finding(Category.ORDER_SUCCESS_WITHOUT_WALLET_CREDIT, "seller_a", "USD", 1234, ["o1"], fixed=True),
        Finding(Category.ORDER_SUCCESS_WITHOUT_WALLET_CREDIT, "seller_b", "USD", 500, ["o2"]),
        Finding(Category.ORDER_SUCCESS_WITHOUT_WALLET_CREDIT, "seller_c", "JPY", 700, ["o3"]),
        Finding(Category.REFUND_EXCEEDS_CHARGE, "seller_a", "EUR", 99, ["o4", "re_1"]),
    ])
    page = tmp_path / "internal.html"
    with page.open("w", encoding="utf-8") as out:
        internal.write_html(report, out)

    shown = rendered_by_chromium(page)

    assert shown.totals == {"total": "4", "fixed": "1", "unexplained": "3"}
    assert shown.rows["order_success_without_wallet_credit"] == {"count": "3", "amounts": "700 JPY, 17.34 USD"}
    assert shown.rows["refund_exceeds_charge"] == {"count": "1", "amounts": "0.99 EUR"}
    assert shown.rows["ledger_unbalanced"] == {"count": "0", "amounts": "-"}
    assert set(shown.rows) == {c.value for c in Category} and shown.svg_rects == len(Category)


def test_the_settlement_report_page_is_the_same_page_with_its_totals(tmp_path):
    with ReportBuilder({"psp": "stripe", "file_name": "day.csv"}) as builder:
        builder.counts[ExternalCategory.MATCHED] = 7
        builder.amounts[ExternalCategory.MATCHED]["USD"] = 12345
        page = tmp_path / "external.html"
        with page.open("w", encoding="utf-8") as out:
            builder.write_html(out)

    shown = rendered_by_chromium(page)

    assert shown.totals == {"psp": "stripe", "file_name": "day.csv", "total": "7", "unexplained": "0", "fixed": "0"}
    assert shown.rows[ExternalCategory.MATCHED.value] == {"count": "7", "amounts": "123.45 USD"}
