"""Garbage-collector settings for the long-running and batch-heavy processes.

The batch ingest keeps a fetch's worth of objects alive for a few
milliseconds (the records' futures, pending changelog and status writes).
With CPython's default thresholds (700, 10, 10) they outlive the young
generations and pile into the oldest one, and every few thousand records a
full collection walks the whole heap: measured with ``gc.callbacks`` in a
worker applying the quick bench's backlog, 1.05 s of 8.1 s of CPU went to
collections (8 full ones of ~90 ms each), against 0.27 s of 6.7 s with the
thresholds below. Reference counting still frees almost everything at once;
the cycle collector only has to find cycles, so it can run less often.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# young collections every 10,000 net allocations; a middle one every 50 of
# those; a full one every 100 middle ones (and only when a quarter of the
# oldest generation is new, CPython's own rule)
GC_THRESHOLDS = (10_000, 50, 100)


def tune_for_worker() -> None:
    """Once, after start-up's imports and set-up: those objects are long-lived,
    so move them out of the collector's sight (``gc.freeze``) and raise the
    thresholds for the rest of the process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """The thresholds above for a block (an offline replay), restored after."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
