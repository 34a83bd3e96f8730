"""The garbage collector's setting for a pass over a settlement file, restored afterwards.

A pass allocates a few objects per row (the CSV cells, the row, its amounts, its outcome) and frees almost all
of them at once by reference counting: the rows it creates form no cycles. With CPython's default thresholds
a young collection runs every 700 allocations and a full one every ~100 of those, and each full collection
walks every live container, the interpreter's own (modules, boto3) and the sets that grow with the file
(`Matcher._settled`, `_seen`: a million entries at the end of a large file). Measured on a million-row file,
that is ~6 s of a ~19 s run. So, for the pass only (a common batch-job setting):
- `gc.freeze()` moves everything alive when the pass starts into the permanent generation, which no collection
  walks (it is handed back by `gc.unfreeze()` at the end, so nothing is leaked or kept alive longer);
- the young generation's threshold goes up from 700 to `YOUNG` allocations, so collections become rare;
  cycles made during the pass (boto3 keeps a few) are still collected, only later.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG = 100_000  # allocations between young collections during a pass (CPython's default: 700)
OLDER = 50  # young collections per middle-generation one, and middle ones per full one (default: 10)


@contextmanager
def batch_collection() -> Iterator[None]:
    """Collector tuned for a streamed pass over a file; the previous setting comes back even on an error."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG, OLDER, OLDER)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
