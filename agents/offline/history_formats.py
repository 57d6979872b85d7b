"""A history of input events in JSON Lines, CSV or Parquet, as JSON lines.

``replay``, ``fit`` and ``evaluate`` read every format through this module and
judge each record as a worker judges a record's value
(``agents/offline/history_lines.py``), in the shape ``ENGAGEMENT_INPUT_FORMAT``
names. The format follows the file's suffix (docs/CONTRACTS.md, "History
files"):

- ``.csv``: a header row names the fields; an empty cell is an absent field;
  a ``ts`` or ``timestamp`` cell of digits only is epoch ms (else RFC 3339
  text); a ``props`` or ``properties`` cell holds a JSON object;
- ``.parquet``: columns name the fields; nulls are absent fields; a
  timestamp column with a time zone is an instant (one without is refused,
  like an RFC 3339 time without an offset); a struct column is an object;
- anything else: JSON Lines.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

from tables.errors import ConfigurationError

TIME_FIELDS: Final = frozenset({"ts", "timestamp"})
OBJECT_FIELDS: Final = frozenset({"props", "properties"})
PARQUET_BATCH_ROWS: Final = 65_536


@contextlib.contextmanager
def history_lines(path: Path) -> Iterator[Iterator[bytes]]:
    """The records of the history at ``path``, one JSON object per line."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
            yield _csv_lines(handle)
    elif suffix == ".parquet":
        yield _parquet_lines(path)
    else:
        with path.open("rb") as handle:
            yield handle


def _csv_lines(handle: io.TextIOBase) -> Iterator[bytes]:
    for row in csv.DictReader(handle):
        record: dict[str, Any] = {}
        for name, cell in row.items():
            if name is None or cell is None or cell == "":
                continue  # a short row's missing cells, an empty cell
            record[name] = _csv_value(name, cell)
        yield _line(record)


def _csv_value(name: str, cell: str) -> Any:
    if name in TIME_FIELDS and cell.strip().isdigit():
        return int(cell)
    if name in OBJECT_FIELDS:
        try:
            return json.loads(cell)
        except ValueError:
            return cell  # refused by the validator as what it is: not an object
    return cell


def _parquet_lines(path: Path) -> Iterator[bytes]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise ConfigurationError(
            "reading Parquet needs pyarrow: pip install 'engagement-streams[parquet]'"
        ) from None
    try:
        source = parquet.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: not a readable Parquet file ({exc})") from None
    for batch in source.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            yield _line({name: value for name, value in row.items() if value is not None})


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, default=_instant).encode(
        "utf-8", "surrogateescape"
    )


def _instant(value: Any) -> Any:
    """Epoch ms of an aware datetime; a naive one as text without an offset (which
    the validator refuses: its instant is unknown)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat()
        return round(value.timestamp() * 1000)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
