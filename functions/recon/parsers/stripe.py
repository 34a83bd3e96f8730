"""Stripe itemized reports: balance_change_from_activity.itemized.3 and payout_reconciliation.itemized.5.

Both share the columns we need, read by header name; amounts are signed decimal major units.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from functions.recon.errors import UnparseableFile
from functions.recon.parsers.chunks import CHUNK, RecordChunks
from functions.recon.parsers.text import (
    Prefixed,
    column_index,
    csv_record,
    detect_encoding,
    minor_units,
    open_text,
    utc_timestamp,
)
from functions.recon.rows import ChargeBlock, MalformedRow, ParsedRow, RowKind, SettlementRow
from functions.shared.lazy import deferred
from functions.shared.money import CURRENCY_EXPONENTS, Money, MoneyError

# Arrow and numpy (~130 ms to import) only when a UTF-8 Stripe report is read in columns: other files, other PSPs
# and the rest of recon's cold start go without them (benchmarks/cold_start.py).
np = deferred("numpy")
pa = deferred("pyarrow")
pc = deferred("pyarrow.compute")
pacsv = deferred("pyarrow.csv")

COLUMNS: dict[str, tuple[str, ...]] = {
    "balance_transaction_id": ("balance_transaction_id",),
    "created": ("created_utc", "created"),
    "currency": ("currency",),
    "gross": ("gross", "amount"),
    "fee": ("fee",),
    "net": ("net",),
    "category": ("reporting_category",),
    "source_id": ("source_id", "source"),
    "charge_id": ("charge_id",),
    "payment_intent_id": ("payment_intent_id",),
    "payout_id": ("automatic_payout_id", "payout_id"),
    "order_id": ("payment_metadata[payment_order_id]", "charge_metadata[payment_order_id]",
                 "metadata[payment_order_id]"),
    "refund_order_id": ("refund_metadata[payment_order_id]",),
    # A transfer to a seller names its order in its own metadata, and the connected account it paid.
    "transfer_order_id": ("transfer_metadata[payment_order_id]",),
    "destination": ("connected_account_id",),
    # A charge of a checkout in one currency names the checkout (and its charge key, `<checkout_id>#<CURRENCY>`).
    "checkout_id": ("payment_metadata[checkout_id]", "charge_metadata[checkout_id]", "metadata[checkout_id]"),
    "charge_key": ("payment_metadata[charge_key]", "charge_metadata[charge_key]", "metadata[charge_key]"),
}
REQUIRED = ("balance_transaction_id", "currency", "gross", "category")
# The currency codes as Stripe writes them (lower case) and as we do, to the code.
SPELLINGS = {spelling: code for code in CURRENCY_EXPONENTS for spelling in (code, code.lower())}

KINDS: dict[str, RowKind] = {
    "charge": RowKind.CHARGE,
    "payment": RowKind.CHARGE,
    "refund": RowKind.REFUND,
    "partial_capture_reversal": RowKind.REFUND,
    "refund_failure": RowKind.REFUND,
    "charge_failure": RowKind.CHARGEBACK,
    "dispute": RowKind.CHARGEBACK,
    "dispute_reversal": RowKind.CHARGEBACK_REVERSAL,
    "fee": RowKind.FEE,
    "tax": RowKind.FEE,
    "payout": RowKind.PAYOUT,
    "payout_reversal": RowKind.PAYOUT,
    "transfer": RowKind.TRANSFER,
    "transfer_reversal": RowKind.TRANSFER_REVERSAL,
    **{name: RowKind.BATCH for name in (
        "advance", "advance_funding", "connect_collection_transfer", "connect_reserved_funds",
        "issuing_authorization_hold", "issuing_authorization_release", "issuing_transaction",
        "other_adjustment", "platform_earning", "platform_earning_refund", "risk_reserved_funds", "topup",
        "topup_reversal",
    )},
}


def parse(text: io.TextIOWrapper) -> Iterator[ParsedRow]:
    """Rows of the report, in file order, with their line numbers as csv.reader counts them."""
    lines = iter(text)
    first = next(lines, None)
    if first is None:
        raise UnparseableFile("empty file: no header row")
    header, line = csv_record(first, lines)
    yield from rows(lines, Layout.of(header), line)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the columns we read are in a file: positions in the header, `width` for a column the file lacks
    (each row gets one empty cell appended there)."""

    width: int
    positions: tuple[int, ...]  # in the order of FIELDS

    @classmethod
    def of(cls, header: list[str]) -> Layout:
        at = column_index(header, COLUMNS, REQUIRED)
        return cls(len(header), tuple(at.get(name, len(header)) for name in FIELDS))

    def has(self, name: str) -> bool:
        return self.positions[FIELDS.index(name)] < self.width

    def position(self, name: str) -> int:
        return self.positions[FIELDS.index(name)]


FIELDS = ("balance_transaction_id", "created", "currency", "gross", "fee", "net", "category", "source_id",
          "charge_id", "payment_intent_id", "payout_id", "order_id", "refund_order_id", "checkout_id", "charge_key",
          "transfer_order_id", "destination")


def rows(lines: Iterator[str], layout: Layout, line: int) -> Iterator[ParsedRow]:
    """The rows of `lines`, the first of which is line `line + 1` of the file.

    This loop runs for every row of files of millions of rows, so it is written for speed: a line without a
    double quote cannot hold a quoted comma or a line break, and `split(",")` reads it exactly as csv.reader
    would, twice as fast; any other line (or one longer than csv's field limit) goes through csv.reader. The
    column positions are bound to local names once. Amounts and times go through `minor_units` and
    `utc_timestamp`, each with its own fast path for the usual form, and every Money through its checks.
    """
    width = layout.width
    bt, created, currency_at, gross_at, fee_at, net_at, category_at, source_at, charge_at, intent_at, payout_at, \
        order_at, refund_order_at, checkout_at, charge_key_at, transfer_order_at, destination_at = layout.positions
    payout, exponents, kinds, limit = RowKind.PAYOUT, CURRENCY_EXPONENTS, KINDS, csv.field_size_limit()
    currencies = SPELLINGS
    last_moment, last_occurred = None, None
    for text_line in lines:
        line += 1
        if '"' in text_line or len(text_line) > limit:
            row, taken = csv_record(text_line, lines)
            line += taken - 1
        else:
            row = text_line.split(",")  # the last cell keeps the line break: every cell read is stripped
        if len(row) != width:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            yield MalformedRow(line, f"row has {len(row)} fields, the header has {width}")
            continue
        row.append("")
        order_id = row[order_at].strip() or row[refund_order_at].strip() or row[transfer_order_at].strip()
        intent = row[intent_at].strip() or row[charge_at].strip()
        checkout = row[checkout_at].strip() or row[charge_key_at].strip().rpartition("#")[0]
        try:
            # Common spellings map to shared objects (no new string per row); others are normalised here.
            category = row[category_at].strip()
            kind = kinds.get(category)
            if kind is None:
                category = category.lower()
                kind = kinds.get(category)
                if kind is None:
                    raise ValueError(f"unknown reporting_category {category!r}")
            cell = row[currency_at].strip()
            currency = currencies.get(cell) or cell.upper()
            exponent = exponents.get(currency)
            if exponent is None:
                raise MoneyError("unsupported_currency", f"currency {currency!r} is not supported")
            gross = minor_units(row[gross_at], exponent)
            text = row[fee_at]
            if text and not text.isspace():  # Stripe's net is gross - fee by definition: computed, not parsed
                fee = minor_units(text, exponent)
                net: int | None = gross - fee
            else:
                fee, net_text = 0, row[net_at].strip()
                net = minor_units(net_text, exponent) if net_text else None
            # A file of a day's activity has rows of the same second one after another: the last one is reused.
            moment = row[created].strip()
            if moment != last_moment:
                last_occurred, last_moment = utc_timestamp(moment), moment
            occurred = last_occurred
        except (MoneyError, ValueError) as error:
            yield MalformedRow(line, str(error), order_id, intent, checkout)
            continue
        source = row[source_at].strip()
        gross_money = Money(gross, currency)
        net_money = gross_money if net == gross else (Money(net, currency) if net is not None else None)
        fee_money = Money(fee, currency) if fee else None
        yield SettlementRow(line, kind, row[bt].strip(), order_id, intent, source, gross_money, fee_money, net_money,
                            occurred, source if kind is payout else row[payout_at].strip(), category, checkout,
                            row[destination_at].strip())


# -- columns: the plain charges of a UTF-8 file read in bulk ------------------------------------------------------

# A plain charge: the category `charge`, a currency of two decimals as we or Stripe spell it, non-negative
# amounts `1234.56`, a real calendar time `2026-01-30 10:11:12` (29 February is left to the row parser), and ids in
# printable ASCII without spaces, which strip() leaves as they are (the checkout id and the PSP reference not
# empty). A charge that names an order (a per-order charge, before checkouts were charged once) is read as a row.
_AMOUNT = r"[0-9]{1,15}\.[0-9]{2}"
_DAY = r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
_MOMENT = r"[1-9][0-9]{3}-" + _DAY + r" ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_ID, _OPTIONAL_ID = "[!-~]+", "[!-~]*"
_PLAIN_CURRENCIES = tuple(sorted(spelling for spelling, code in SPELLINGS.items() if CURRENCY_EXPONENTS[code] == 2))
# The patterns of the other cells; a column the file lacks is not checked (its cell is empty).
_PLAIN = (("gross", _AMOUNT), ("fee", _AMOUNT), ("created", _MOMENT), ("checkout_id", _ID), ("reference", _ID),
          ("order_id", ""),
          ("balance_transaction_id", _OPTIONAL_ID), ("source_id", _OPTIONAL_ID), ("payout_id", _OPTIONAL_ID))


_LF, _CR = ord("\n"), ord("\r")


def stream(source: BinaryIO, chunk_size: int = CHUNK) -> Iterator[ParsedRow | ChargeBlock]:
    """The report as ChargeBlocks (a UTF-8 file) or as rows (any other encoding): `ChargeBlock.rows()` of the
    blocks are exactly the rows `parse` gives.

    A chunk of whole records is read by Arrow's CSV reader, only the columns we use. Rows that pass the
    plain-charge checks in bulk become columns; each other row of the chunk is read by `rows` from its line.
    A chunk Arrow cannot read line for line (a quoted line break, a blank line, a row of the wrong width, a lone
    CR, a field over csv's size limit; or no chunk at all: no quote-free line within 8 chunk sizes) ends the
    columns: from its first line on, the rest of the file goes to `rows`.
    """
    head = source.read(chunk_size)
    if detect_encoding(head[:4]) not in ("utf-8", "utf-8-sig"):
        yield from parse(open_text(Prefixed(head, source)))
        return
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8):]
    chunks = RecordChunks(head, source, chunk_size, 8 * chunk_size)
    parts = iter(chunks)
    first = next(parts, b"")
    header_end = first.find(b"\n") + 1 or len(first)
    header_text = first[:header_end].decode("utf-8")
    if not header_text.strip() or header_text.count('"') % 2 or "\r" in header_text.rstrip("\r\n"):
        # empty, a header across lines, or lines ended by CR alone: the row parser reads the file
        yield from parse(_text(first, chunks))
        return
    header, _ = csv_record(header_text, iter(()))
    layout = Layout.of(header)
    reader = _ArrowReader(layout)
    if not reader.usable:  # a report without the columns of a plain charge: every row is read as a row
        yield from rows(iter(_text(first[header_end:], chunks)), layout, 1)
        return
    line = 1
    chunk = first[header_end:]
    while True:
        if chunk:
            block = reader.block(chunk, line)
            if block is None:
                yield from rows(iter(_text(chunk, chunks)), layout, line)
                return
            yield block
            line += block.line_count
        chunk = next(parts, None)
        if chunk is None:
            break
    if chunks.stopped:
        yield from rows(iter(_text(b"", chunks)), layout, line)


def _text(chunk: bytes, chunks: RecordChunks) -> io.TextIOWrapper:
    """`chunk` and everything after it, as the text stream the row parser reads."""
    return io.TextIOWrapper(io.BufferedReader(Prefixed(chunk, chunks.rest()), buffer_size=CHUNK), encoding="utf-8",
                            newline="", errors="strict")


class _OnDemand(Sequence[Any]):
    """An Arrow column read into Python one value at a time, for the few rows that need it."""

    def __init__(self, values: pa.ChunkedArray):
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        return self._values[index].as_py()


class _ArrowReader:
    def __init__(self, layout: Layout):
        self.layout = layout
        self.names = [f"c{i}" for i in range(layout.width)]
        # The columns the checks and the block read; each one the file lacks is left out (an empty cell). The PSP
        # reference of a plain charge is its payment intent, or its charge when the file has no intent column.
        reference = next((name for name in ("payment_intent_id", "charge_id") if layout.has(name)), None)
        self.fields = {name: f"c{layout.position(name)}" for name in (
            "balance_transaction_id", "created", "currency", "gross", "fee", "category", "source_id", "payout_id",
            "order_id", "checkout_id") if layout.has(name)}
        if reference:
            self.fields["reference"] = f"c{layout.position(reference)}"
        self.usable = all(name in self.fields for name in ("created", "fee", "checkout_id", "reference"))
        self.plain_currencies = pa.array(_PLAIN_CURRENCIES)
        # The cells are checked in one pass, joined by spaces: only a time holds one, in its one place, so every
        # cell is matched by its own pattern.
        self.checked = [name for name, _ in _PLAIN if name in self.fields]
        self.pattern = "^" + " ".join(pattern for name, pattern in _PLAIN if name in self.fields) + "$"
        wanted = sorted(set(self.fields.values()), key=lambda name: int(name[1:]))
        self.convert = pacsv.ConvertOptions(include_columns=wanted, column_types=dict.fromkeys(wanted, pa.string()),
                                            strings_can_be_null=False, quoted_strings_can_be_null=False)
        # A quoted line break is read as part of its value: the record then spans two lines, and the count of
        # rows against lines sends the chunk to the row parser.
        self.parse_options = pacsv.ParseOptions(newlines_in_values=True)
        self.limit = csv.field_size_limit()

    def block(self, chunk: bytes, line: int) -> ChargeBlock | None:
        """The rows of `chunk` (line `line + 1` of the file onwards) as a block; None if Arrow cannot read it line
        for line."""
        chunk.decode("utf-8")  # an undecodable byte anywhere makes the file unparseable, as in the row parser
        data = np.frombuffer(chunk, np.uint8)
        breaks = np.flatnonzero(data == _LF)
        starts = np.concatenate(([0], breaks + 1))  # of each line
        ends = np.append(breaks, len(chunk))  # of each line, its LF left out
        if starts[-1] == len(chunk):  # the chunk ends with a LF: no line after it
            starts, ends = starts[:-1], ends[:-1]
        if int((ends - starts).max()) > self.limit:
            return None
        returns = np.flatnonzero(data == _CR)
        if len(returns) and (returns[-1] + 1 == len(chunk) or not (data[returns + 1] == _LF).all()):
            return None  # a lone CR: it breaks lines for Arrow only
        line_count = len(starts)
        try:
            table = pacsv.read_csv(pa.BufferReader(chunk), read_options=pacsv.ReadOptions(
                column_names=self.names, use_threads=False, block_size=len(chunk) + 1),
                parse_options=self.parse_options, convert_options=self.convert)
        except pa.ArrowInvalid:
            return None
        if table.num_rows != line_count:
            return None
        plain = self._plain(table)
        block = ChargeBlock("charge", line_count, [], [], [], [], [], [], [], [], [], [], [])
        if (taken := table.filter(plain)).num_rows:
            self._columns(block, taken, pc.indices_nonzero(plain), line)
        # The other rows, read by the row parser from their lines; each line is one whole row, so the n-th row it
        # gives is the n-th line's.
        indices = pc.indices_nonzero(pc.invert(plain)).to_pylist()
        if indices:
            text = b"\n".join([chunk[starts[index]:ends[index]] for index in indices]).decode("utf-8") + "\n"
            block.others = list(rows(iter(io.StringIO(text, newline="")), self.layout, 0))
            for row, index in zip(block.others, indices, strict=True):
                row.line = line + 1 + index
        return block

    def _plain(self, table: pa.Table) -> pa.ChunkedArray:
        """Which rows are plain charges: every cell we use in its usual form (the fast path of `minor_units` and
        `utc_timestamp`)."""
        fields = self.fields
        plain = pc.equal(table.column(fields["category"]), "charge")
        plain = pc.and_(plain, pc.is_in(table.column(fields["currency"]), value_set=self.plain_currencies))
        cells = pc.binary_join_element_wise(*(table.column(fields[name]) for name in self.checked), " ")
        return pc.and_(plain, pc.match_substring_regex(cells, self.pattern))

    def _columns(self, block: ChargeBlock, taken: pa.Table, indices: pa.Array, line: int) -> None:
        def texts(name: str | None) -> list[str]:
            if name is None:
                return [""] * taken.num_rows
            return taken.column(name).to_numpy(zero_copy_only=False).tolist()

        def same_texts(name: str | None) -> list[str]:
            """A column that nearly always holds one value in a whole chunk (a currency, a payout)."""
            if name is not None and len(values := pc.unique(taken.column(name))) == 1:
                return [values[0].as_py()] * taken.num_rows
            return texts(name)

        def minor(name: str) -> list[int]:
            return pc.cast(pc.replace_substring(taken.column(name), ".", ""), pa.int64()).to_numpy().tolist()

        fields = self.fields
        block.lines = pc.add(indices, line + 1).to_numpy().tolist()
        block.row_ids = texts(fields.get("balance_transaction_id"))
        block.checkout_ids = texts(fields["checkout_id"])
        block.references = texts(fields["reference"])
        block.sources = _OnDemand(taken.column(fields["source_id"])) if "source_id" in fields \
            else [""] * taken.num_rows
        block.gross = minor(fields["gross"])
        block.fees = minor(fields["fee"])
        block.currencies = list(map(SPELLINGS.__getitem__, same_texts(fields["currency"])))
        block.batch_ids = same_texts(fields.get("payout_id"))
        seconds = pc.cast(pc.strptime(taken.column(fields["created"]), format="%Y-%m-%d %H:%M:%S", unit="s"),
                          pa.int64())
        block.seconds = _OnDemand(seconds)
        bounds = pc.min_max(seconds)
        block.span = (bounds["min"].as_py(), bounds["max"].as_py())
