"""Decoding and header helpers shared by the parsers: streams in, never whole files in memory."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import chain
from typing import BinaryIO

from functions.recon.errors import UnparseableFile
from functions.shared.money import MoneyError

_BUFFER = 1 << 20


class Prefixed(io.RawIOBase):
    """A raw stream that first returns bytes already peeked, then the rest of the source."""

    def __init__(self, head: bytes, source: BinaryIO):
        self._head = head
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def detect_encoding(head: bytes) -> str:
    """Encoding from the first bytes: a BOM if there is one, zero bytes for UTF-16 without one, else UTF-8."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if len(head) >= 2 and head[1] == 0 and head[0] != 0:
        return "utf-16-le"
    if len(head) >= 2 and head[0] == 0 and head[1] != 0:
        return "utf-16-be"
    return "utf-8"


def open_text(source: BinaryIO) -> io.TextIOWrapper:
    """A text stream over a binary one (S3 StreamingBody or a file), decoded by what its first bytes say."""
    head = source.read(4)
    buffered = io.BufferedReader(Prefixed(head, source), buffer_size=_BUFFER)
    return io.TextIOWrapper(buffered, encoding=detect_encoding(head), newline="", errors="strict")


def csv_record(first: str, rest: Iterator[str]) -> tuple[list[str], int]:
    """The CSV record that starts with the line `first`, exactly as `csv.reader` reads it (quoted commas,
    doubled quotes, line breaks inside quotes: continuation lines are taken from `rest`), and how many lines
    it took. For the lines a plain `split(",")` cannot read; raises csv.Error as csv.reader does."""
    reader = csv.reader(chain((first,), rest))
    return next(reader, []), reader.line_num


_SEPARATORS = re.compile(r"[\s_]+")


def header_key(name: str) -> str:
    """`Psp Reference`, ` psp_reference `, `PSP  Reference` all become `psp reference`."""
    return _SEPARATORS.sub(" ", name.replace("\ufeff", "").strip().lower()).strip()


def column_index(header: Iterable[str], wanted: dict[str, tuple[str, ...]], required: Iterable[str]) -> dict[str, int]:
    """Positions of the columns we read, found by (normalised) name; any alias of a field will do."""
    positions = {header_key(name): i for i, name in enumerate(header)}
    found: dict[str, int] = {}
    for field, aliases in wanted.items():
        for alias in aliases:
            if header_key(alias) in positions:
                found[field] = positions[header_key(alias)]
                break
    missing = [field for field in required if field not in found]
    if missing:
        raise UnparseableFile(f"missing columns: {', '.join(missing)}")
    return found


def cell(row: list[str], index: int | None) -> str:
    if index is None or index >= len(row):
        return ""
    return row[index].strip()


def decimal_text(text: str) -> str:
    """A report asked for with a comma decimal separator writes `12,34`; thousands separators are refused."""
    text = text.strip().replace(" ", "")
    if "," in text:
        if "." in text or text.count(",") > 1:
            raise MoneyError("invalid_amount", f"ambiguous amount {text!r}")
        text = text.replace(",", ".")
    return text


def utc_timestamp(text: str) -> datetime | None:
    """`2026-01-30 10:11:12` (Stripe's *_utc), ISO 8601 with offset or Z, or epoch seconds; empty is None."""
    if len(text) == 19 and text[10] == " " and text[13] == ":" == text[16]:  # the usual `2026-01-30 10:11:12`
        return datetime.fromisoformat(text + "+00:00")  # 10x cheaper than .replace(tzinfo=UTC), same value
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def minor_units(text: str, exponent: int) -> int:
    """Exact signed minor units of a decimal major amount (`-0.5` USD → -50); more decimals than the
    currency has are refused unless they are zeros. Plain string work: this runs for every amount of a file."""
    whole, _, fraction = text.partition(".")
    # The usual shape, `-12.34` with exactly the currency's decimals: ASCII digits only, so int() is exact.
    if len(fraction) == exponent and fraction.isdigit() and text.isascii() and exponent \
            and (whole[1:] if whole[:1] == "-" else whole).isdigit():
        return int(whole + fraction)
    return _minor_units(text, exponent)


def _minor_units(text: str, exponent: int) -> int:
    text = text.strip()
    if "," in text or " " in text:
        text = decimal_text(text)
    body = text[1:] if text[:1] in ("-", "+") else text
    whole, _, fraction = body.partition(".")
    digits = whole + fraction
    if not digits or not digits.isascii() or not digits.isdigit():
        raise MoneyError("invalid_amount", f"{text!r} is not a decimal amount")
    if len(fraction) > exponent:
        if fraction[exponent:].strip("0"):
            raise MoneyError("too_many_decimals", f"{text!r} has more decimals than the currency allows")
        fraction = fraction[:exponent]
    value = int((whole or "0") + fraction.ljust(exponent, "0"))
    return -value if text[:1] == "-" else value
