"""Settlement file parsers: one per PSP format, each a generator of rows over a decoded text stream."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import BinaryIO

from functions.recon.errors import UnknownPsp, UnparseableFile
from functions.recon.parsers import adyen, paypal, stripe
from functions.recon.parsers.text import open_text
from functions.recon.rows import ParsedRow

PARSERS = {"stripe": stripe.parse, "adyen": adyen.parse, "paypal": paypal.parse}


def parse(psp: str, source: BinaryIO) -> Iterator[ParsedRow]:
    """Rows of a settlement file of `psp`, streamed. Raises UnparseableFile for a file that cannot be read."""
    try:
        parser = PARSERS[psp]
    except KeyError:
        raise UnknownPsp(f"no parser for PSP {psp!r}") from None
    text = open_text(source)
    return _decoded(parser(text), text.encoding)


def _decoded(rows: Iterator[ParsedRow], encoding: str) -> Iterator[ParsedRow]:
    """Rows of the parser; undecodable bytes or broken CSV quoting make the whole file unparseable."""
    try:
        yield from rows
    except UnicodeDecodeError as error:
        raise UnparseableFile(f"cannot decode the file as {encoding}: {error.reason}") from error
    except csv.Error as error:
        raise UnparseableFile(f"not a readable CSV file: {error}") from error
