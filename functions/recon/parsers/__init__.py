"""Settlement file parsers: one per PSP format, each a generator of rows over a decoded text stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from functions.recon.errors import UnknownPsp
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
    return parser(open_text(source))
