"""Settlement file parsers: one per PSP format, each a generator of rows over a decoded text stream; Stripe's
reports (the large ones) are also read as columns."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import BinaryIO, TypeVar

from functions.recon.errors import UnknownPsp, UnparseableFile
from functions.recon.parsers import adyen, bank, paypal, stripe
from functions.recon.parsers.text import open_text
from functions.recon.rows import ChargeBlock, ParsedRow

# "bank": the bank's deposit file of checks and money orders (issue 17; matched by functions/recon/bank.py).
PARSERS = {"stripe": stripe.parse, "adyen": adyen.parse, "paypal": paypal.parse, "bank": bank.parse}
# Formats read in ChargeBlocks; each yields rows as well (what it does not read as columns).
COLUMNAR = {"stripe": stripe.stream}
# Formats whose charge is a checkout's charge in one currency (the others settle one order a charge). Adyen's rows
# that name one order (a per-order Merchant Reference) still settle that order.
CHARGED_PER_CHECKOUT = frozenset({"stripe", "adyen"})
# Formats whose refunds and disputes name the charge they undo, not an order (Adyen: the payment's Merchant
# Reference, our charge key), and a refund its own reference: matched to an order without a guess
# (functions/recon/rules.py `undone_order`).
UNDOINGS_NAME_THEIR_CHARGE = frozenset({"adyen"})
# Formats whose files carry our transfers to sellers (Stripe Connect).
CARRIES_TRANSFERS = frozenset({"stripe"})

Item = TypeVar("Item")


def stream(psp: str, source: BinaryIO) -> Iterator[ParsedRow | ChargeBlock]:
    """The file of `psp` as the matcher takes it: ChargeBlocks where the format has a columnar reader, rows
    otherwise. Raises UnparseableFile for a file that cannot be read."""
    if psp in COLUMNAR:
        return _decoded(COLUMNAR[psp](source))
    return parse(psp, source)


def parse(psp: str, source: BinaryIO) -> Iterator[ParsedRow]:
    """Rows of a settlement file of `psp`, streamed, one by one. Raises UnparseableFile for a file that cannot be
    read."""
    if psp in COLUMNAR:
        return _rows(stream(psp, source))
    try:
        parser = PARSERS[psp]
    except KeyError:
        raise UnknownPsp(f"no parser for PSP {psp!r}") from None
    text = open_text(source)
    return _decoded(parser(text))


def _rows(items: Iterator[ParsedRow | ChargeBlock]) -> Iterator[ParsedRow]:
    for item in items:
        if type(item) is ChargeBlock:
            yield from item.rows()
        else:
            yield item  # type: ignore[misc]


def _decoded(rows: Iterator[Item]) -> Iterator[Item]:
    """Rows of the parser; undecodable bytes or broken CSV quoting make the whole file unparseable."""
    try:
        yield from rows
    except UnicodeDecodeError as error:
        raise UnparseableFile(f"cannot decode the file as {error.encoding}: {error.reason}") from error
    except csv.Error as error:
        raise UnparseableFile(f"not a readable CSV file: {error}") from error
