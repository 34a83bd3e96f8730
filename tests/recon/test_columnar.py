"""Stripe's columnar reader gives exactly the rows of the row parser, and the matcher the same outcomes and effects
for ChargeBlocks as for rows; on clean files it does read columns, on odd ones it falls back, row for row."""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import recon_bench
from functions.recon import parsers
from functions.recon.closing import Window
from functions.recon.errors import UnparseableFile
from functions.recon.matching import Matcher, Policy
from functions.recon.outcomes import Outcome, Restart
from functions.recon.parsers import stripe
from functions.recon.parsers.text import open_text
from functions.recon.rows import ChargeBlock, ParsedRow
from functions.shared.money import Money
from tests.recon.conftest import FIXTURES, summarized

STRIPE = (FIXTURES / "stripe/balance_change_from_activity.itemized.3.csv").read_bytes()
HEADER = ["balance_transaction_id", "created_utc", "currency", "gross", "fee", "net", "reporting_category",
          "source_id", "description", "payment_intent_id", "automatic_payout_id", "payment_metadata[checkout_id]",
          "payment_metadata[payment_order_id]"]


def by_rows(data: bytes) -> list[ParsedRow] | type[Exception]:
    """What the row parser alone reads, or the error it ends with."""
    try:
        return list(parsers._decoded(stripe.parse(open_text(io.BytesIO(data)))))
    except UnparseableFile:
        return UnparseableFile


def by_columns(data: bytes, chunk_size: int) -> tuple[list[ParsedRow] | type[Exception], int]:
    """What the columnar reader reads (its blocks' rows), and how many rows it read as columns."""
    read, plain = [], 0
    try:
        for item in parsers._decoded(stripe.stream(io.BytesIO(data), chunk_size)):
            if type(item) is ChargeBlock:
                plain += len(item.lines)
                read += list(item.rows())
                seconds = [item.seconds[i] for i in range(len(item.lines))]
                assert item.span == ((min(seconds), max(seconds)) if seconds else None)
            else:
                read.append(item)
    except UnparseableFile:
        return UnparseableFile, plain
    return read, plain


# Mostly the forms of a plain charge, with every way a cell can leave it.
CATEGORIES = st.sampled_from(["charge"] * 6 + ["refund", "fee", "payout", "Charge", " charge", "payment", "mystery"])
CURRENCIES = st.sampled_from(["usd"] * 4 + ["USD", "eur", "jpy", "kwd", " usd", "Usd", "xyz", ""])
AMOUNTS = st.sampled_from(["12.34"] * 4 + ["0.00", "0.50", "-1.00", "12.3", "12.345", "1,00", " 12.34", "12", "",
                                           "999999999999999.99", "1234567890123456.00", "١٢.٣٤"])
TIMES = st.sampled_from(["2026-01-30 10:11:12"] * 4 + [
    "2024-02-29 23:59:59", "2026-02-29 10:00:00", "2026-02-30 10:00:00", "2026-04-31 00:00:00", "2026-1-30 10:11:12",
    "2026-01-30 24:00:00", "2026-01-30 10:11:60", "0999-01-01 00:00:00", "2026-01-30T10:11:12Z", "1700000000", "",
    " 2026-01-30 10:11:12", "2026-01-30"])
IDS = st.sampled_from(["po_1", "po_2", "pi_9"] * 3 + ["", " po_3", "po_4 ", "po é", "a,b", 'q"uote', "two\nlines",
                                                      "po\x1c", "po\t", "10:11:12"])
TEXTS = st.sampled_from(["", "", "Order 7", "with, comma", 'a "quoted" word', "two\nlines", "cr\r\nlf", "ünï"])
ROWS = st.lists(st.fixed_dictionaries({
    "balance_transaction_id": IDS, "created_utc": TIMES, "currency": CURRENCIES, "gross": AMOUNTS, "fee": AMOUNTS,
    "net": AMOUNTS, "reporting_category": CATEGORIES, "source_id": IDS, "description": TEXTS,
    "payment_intent_id": IDS, "automatic_payout_id": IDS, "payment_metadata[checkout_id]": IDS,
    # a charge naming its order (charged per order) is read as a row
    "payment_metadata[payment_order_id]": st.one_of(st.just(""), IDS),
    "odd": st.sampled_from([None] * 12 + ["blank", "short", "long", "lone_cr", "stray_quote"]),
}), max_size=40)


def write(table: list[dict[str, Any]], terminator: str, bom: bool, quote_all: bool = False) -> bytes:
    def cell(text: str) -> str:
        must = quote_all or any(char in text for char in ',"\r\n')
        return '"' + text.replace('"', '""') + '"' if must else text

    lines = [",".join(HEADER)]
    for row in table:
        lines.append(",".join(cell(row[name]) for name in HEADER))
        odd = row["odd"]
        if odd == "blank":
            lines.append("")
        elif odd == "short":
            lines.append("short,row")
        elif odd == "long":
            lines.append(",".join(["x"] * (len(HEADER) + 1)))
        elif odd == "lone_cr":
            lines[-1] += "\rtxn_cr"
        elif odd == "stray_quote":
            lines[-1] = lines[-1].replace(",", ',5" screen', 1)
    return (b"\xef\xbb\xbf" if bom else b"") + (terminator.join(lines) + terminator).encode()


@settings(max_examples=int(os.environ.get("COLUMNAR_EXAMPLES", "300")), deadline=None)  # timing is not its subject
@given(ROWS, st.sampled_from(["\n", "\r\n"]), st.booleans(), st.sampled_from([False] * 5 + [True]),
       st.sampled_from([64, 200, 1000, 1 << 20]))
def test_the_columnar_reader_reads_every_file_exactly_as_the_row_parser(
        table: list[dict[str, Any]], terminator: str, bom: bool, quote_all: bool, chunk_size: int) -> None:
    data = write(table, terminator, bom, quote_all)
    read, _ = by_columns(data, chunk_size)
    assert read == by_rows(data)


@pytest.mark.parametrize("chunk_size", [2000, 10_000, 1 << 20])
def test_a_clean_report_is_read_as_columns(chunk_size: int) -> None:
    data = recon_sample(3000)
    read, plain = by_columns(data, chunk_size)
    assert read == by_rows(data)
    assert plain > 0.9 * len(read)


def test_from_a_quoted_line_break_on_the_rest_of_the_file_is_read_row_by_row() -> None:
    data = recon_sample(2000)
    lines = data.split(b"\r\n")
    cells = lines[1000].split(b",")
    cells[HEADER_OF_SAMPLE.index("description")] = b'"two\nlines"'
    lines[1000] = b",".join(cells)
    data = b"\r\n".join(lines)
    read, plain = by_columns(data, 10_000)
    assert read == by_rows(data)
    assert 0 < plain < 1000


def test_other_encodings_and_the_fixture_read_the_same() -> None:
    text = STRIPE.decode("utf-8-sig")
    for data in (STRIPE, text.encode("utf-16"), text.encode("utf-8")):
        read, _ = by_columns(data, 128)
        assert read == by_rows(data)


def test_cells_checked_together_keep_their_places() -> None:
    """The cells are matched joined by spaces: a date without its time, followed by an id that looks like a time,
    must not pass for a plain time."""
    row = {"balance_transaction_id": "txn_1", "created_utc": "2026-01-30", "currency": "usd", "gross": "12.34",
           "fee": "0.50", "net": "11.84", "reporting_category": "charge", "source_id": "ch_1", "description": "",
           "payment_intent_id": "pi_1", "automatic_payout_id": "po_b", "payment_metadata[checkout_id]": "10:11:12",
           "payment_metadata[payment_order_id]": "", "odd": None}
    data = write([row] * 3, "\n", False)
    assert by_columns(data, 1 << 20) == (by_rows(data), 0)


def test_an_undecodable_byte_anywhere_makes_the_file_unparseable() -> None:
    data = recon_sample(500)
    at = len(data) // 2
    data = data[:at] + b"\xff" + data[at + 1:]
    assert by_columns(data, 1000)[0] is UnparseableFile is by_rows(data)


# -- the matcher: blocks and rows give the same outcomes and effects ----------------------------------------------

HEADER_OF_SAMPLE = recon_bench.COLUMNS


_SAMPLES: dict[int, bytes] = {}


def recon_sample(rows: int) -> bytes:
    """The benchmark's report (every category planted), `rows` rows."""
    if rows not in _SAMPLES:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "sample.csv"
            recon_bench.generate(path, rows)
            _SAMPLES[rows] = path.read_bytes()
    return _SAMPLES[rows]


class Recording:
    """Fixes and carries that record every call, so two runs can be compared call for call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def restart_order(self, order: dict[str, Any]) -> Restart:
        self.calls.append(("restart", order["payment_order_id"]))
        return Restart.STARTED

    def record_fees(self, currency: str, fees: list[tuple[str, int]]) -> None:
        self.calls += [("fee", reference, Money(minor, currency)) for reference, minor in fees]

    def fee_conflicts(self) -> list[tuple[str, Money]]:
        return []

    def carried(self) -> dict[str, dict[str, Any]]:
        return {}

    def carry(self, order: dict[str, Any], first_seen: str) -> None:
        self.calls.append(("carry", order["payment_order_id"]))

    def mark_raised(self, payment_order_id: str, now: str) -> bool:
        return True

    def clear(self, payment_order_id: str) -> None:
        self.calls.append(("clear", payment_order_id))


def match(items: Any, rows: int, batch_size: int) -> tuple[list[dict[str, Any]], dict[str, list[int]],
                                                         list[tuple[Any, ...]]]:
    checkouts = recon_bench.checkouts_for(rows)
    outcomes: list[Outcome] = []
    effects = Recording()
    start = recon_bench.moment(0, checkouts).replace(microsecond=0)
    matcher = Matcher(Policy("stripe", batch_size=batch_size), recon_bench.FakeStore(checkouts), effects, effects,
                      outcomes.append, window=Window.of_file(start, start + timedelta(hours=20), timedelta(hours=2)),
                      now=datetime(2026, 11, 26, tzinfo=UTC))
    matcher.feed_all(items)
    matcher.finish()
    others, agreeing = summarized(outcomes)
    return sorted((asdict(o) for o in others), key=repr), agreeing, sorted(effects.calls, key=repr)


@pytest.mark.parametrize("batch_size", [7, 1000])
def test_the_matcher_gives_blocks_the_outcomes_and_effects_it_gives_their_rows(batch_size: int) -> None:
    rows = 4000
    data = recon_sample(rows)
    as_blocks = list(stripe.stream(io.BytesIO(data), 20_000))
    assert sum(type(item) is ChargeBlock and len(item.lines) > 0 for item in as_blocks) > 10
    as_rows = list(stripe.parse(open_text(io.BytesIO(data))))
    # rows, then blocks: as when a file starts with rows the columns could not take
    mixed = [*(row for item in as_blocks[:3] for row in item.rows()), *as_blocks[3:]]
    expected = match(iter(as_rows), rows, batch_size)
    assert match(iter(as_blocks), rows, batch_size) == expected
    assert match(iter(mixed), rows, batch_size) == expected
    assert expected[1]["USD"][0] > 3000  # the agreeing charges
    categories = {outcome["category"] for outcome in expected[0]}
    assert {"matched", "amount_mismatch", "currency_mismatch", "duplicate_settlement", "malformed_row",
            "missing_in_ledger", "status_mismatch", "missing_in_settlement"} <= categories
