"""A UTF-8 CSV byte stream cut into chunks of whole records, for a columnar reader.

A chunk ends at the end of a line that holds no double quote. Such a line cannot open a quoted value, so if the
chunk ends inside one, that value began on an earlier line of the chunk: the chunk then reads as fewer records
than lines, and the columnar reader hands it to the row parser. A file whose lines all hold quotes (every cell
quoted) gives no such line: once the data at hand reaches `max_size`, the reader gives up on columns and hands
the rest of the stream, from the first byte it has not yielded, to the row parser.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from functions.recon.parsers.text import Prefixed

CHUNK = 1 << 20  # bytes read at a time; a chunk is about this size


class RecordChunks:
    """Iterate for the chunks; `rest()` is the stream of everything not yet yielded (the chunk that could not
    be cut included), to be read by the row parser instead."""

    def __init__(self, head: bytes, source: BinaryIO, size: int = CHUNK, max_size: int = 8 * CHUNK):
        self._pending = head
        self._source = source
        self._size = size
        self._max = max_size
        self._eof = False
        self.stopped = False  # no cut was found within max_size: rest() holds the remainder

    def _more(self) -> bool:
        if self._eof:
            return False
        data = self._source.read(self._size)
        if not data:
            self._eof = True
            return False
        self._pending += data
        return True

    def __iter__(self) -> Iterator[bytes]:
        while True:
            while len(self._pending) < self._size and self._more():
                pass
            if not self._pending:
                return
            cut = self._cut()
            if cut is None:
                self.stopped = True
                return
            chunk, self._pending = self._pending[:cut], self._pending[cut:]
            yield chunk

    def _cut(self) -> int | None:
        """Where the next chunk ends: after the last line, within the data at hand, that holds no double quote,
        reading more when there is none; the end of the stream ends the last chunk."""
        while True:
            data = self._pending
            end = data.rfind(b"\n") + 1
            while end:
                start = data.rfind(b"\n", 0, end - 1) + 1
                if data.find(b'"', start, end) < 0:
                    return end
                end = start
            if len(data) >= self._max:
                return None
            if not self._more():
                return len(self._pending)

    def rest(self) -> Prefixed:
        """Everything not yielded as a chunk, as one raw binary stream (to be buffered by its reader)."""
        pending, self._pending = self._pending, b""
        return Prefixed(pending, self._source)
