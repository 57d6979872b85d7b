"""Cohort retention and growth accounting (tables/cohorts.py, the offline pass and the
live cells) against the reference's plain-set counting and a hand-worked example."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from reference.cohorts import growth as reference_growth
from reference.cohorts import people
from reference.cohorts import retention as reference_retention
from reference.records import Event

from agents.offline.history_facts import history_facts
from agents.stack.demo import growth_line
from agents.worker.cohorts import (
    CohortGauges,
    LiveCohorts,
    cell_key,
    pack_counts,
    unpack_counts,
)
from agents.worker.metrics import Metrics
from streams.model_settings import model_config
from streams.settings import load_settings
from tables.cohorts import Cell, CellCounts, cohort_step, growth, retention
from tables.state import UserState

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
T0 = 1_700_006_400_000 - 1_700_006_400_000 % WEEK_MS  # a period boundary
SALT = "cohort-salt"
CONFIG = model_config(load_settings(holdout_salt=SALT))


def history(events: list[Event]) -> Path:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        for e in events:
            line = {"event_id": e.event_id, "user_id": e.user_id, "type": e.type, "ts": e.ts_ms}
            if e.tenant is not None:
                line["tenant"] = e.tenant
            if e.segment is not None:
                line["segment"] = e.segment
            handle.write(json.dumps(line) + "\n")
    return Path(handle.name)


def ev(user: str, day: float, n: int = 0, tenant: str = "acme", segment: str = "s") -> Event:
    ts = T0 + int(day * DAY_MS)
    return Event(0, ts, f"{user}-{day}-{n}", user, "login", ts, tenant, segment)


@st.composite
def populations(draw: st.DrawFn) -> list[Event]:
    users = draw(st.integers(1, 12))
    events = []
    for u in range(users):
        tenant = draw(st.sampled_from(["acme", "globex"]))
        segment = draw(st.sampled_from(["a", "b"]))
        days = draw(st.lists(st.floats(0, 48, allow_nan=False), min_size=1, max_size=10))
        repeats = draw(st.integers(0, 2))  # re-sent events: duplicates change nothing
        for n, day in enumerate(days):
            events.append(ev(f"u{u}", day, n, tenant, segment))
            if n < repeats:
                events.append(ev(f"u{u}", day, n, tenant, segment))
    return sorted(events, key=lambda e: e.ts_ms)  # the order replay applies them in


@settings(max_examples=60, deadline=None)
@given(populations())
def test_retention_and_growth_equal_the_reference(events: list[Event]) -> None:
    facts = history_facts(history(events), CONFIG, WEEK_MS)
    persons = people(events, WEEK_MS, SALT, CONFIG.holdout_share)
    last = max(e.ts_ms for e in events) // WEEK_MS
    want = {key: active for key, active in reference_retention(persons, WEEK_MS, last).items()}
    got = {
        ((r.tenant, r.segment, r.group), r.cohort): r.active for r in retention(facts.cells, last)
    }
    assert got == want
    for row in growth(facts.cells, last):
        labels = (row.tenant, row.segment, row.group)
        expected = reference_growth(persons, WEEK_MS, row.period)[labels]
        assert (row.new, row.retained, row.resurrected, row.churned) == expected
        assert row.active == row.new + row.retained + row.resurrected
        added = row.new + row.resurrected
        assert row.quick_ratio == (round(added / row.churned, 6) if row.churned else None)


def test_growth_accounting_of_a_small_product_by_hand() -> None:
    # week 0: a, b, c arrive; week 1: a stays, d arrives; week 2: b is back, d stays
    events = [ev("a", 0), ev("b", 1), ev("c", 2), ev("a", 8), ev("d", 9), ev("b", 15), ev("d", 16)]
    facts = history_facts(history(events), CONFIG, WEEK_MS)
    rows = [r for r in growth(facts.cells, T0 // WEEK_MS + 2)]
    totals: dict[int, list[int]] = {}
    for r in rows:  # summed over the two groups
        into = totals.setdefault(r.period - T0 // WEEK_MS, [0, 0, 0, 0])
        for i, v in enumerate((r.new, r.retained, r.resurrected, r.churned)):
            into[i] += v
    assert totals == {0: [3, 0, 0, 0], 1: [1, 1, 0, 2], 2: [0, 1, 1, 1]}
    # quick ratio of week 2 over both groups: (new 0 + resurrected 1) / churned 1 (a)
    cohort0 = [r for r in retention(facts.cells, T0 // WEEK_MS + 2) if r.cohort == T0 // WEEK_MS]
    sizes = sum(r.size for r in cohort0)
    assert sizes == 3
    assert [sum(r.active[k] for r in cohort0) for k in range(3)] == [3, 1, 1]


def state(first_day: float, last_day: float, tenant: str = "acme") -> UserState:
    return UserState(
        first_seen_ms=T0 + int(first_day * DAY_MS),
        last_seen_ms=T0 + int(last_day * DAY_MS),
        tenant=tenant,
    )


def test_a_step_is_taken_only_when_last_seen_enters_a_later_period() -> None:
    assert cohort_step(None, state(3, 3), WEEK_MS) is not None
    # a late event or another event of the same week: no step
    assert cohort_step(state(0, 9), state(0, 9), WEEK_MS) is None
    assert cohort_step(state(0, 8), state(0, 9), WEEK_MS) is None
    retained = cohort_step(state(0, 6), state(0, 8), WEEK_MS)
    assert retained is not None and retained.retained
    back = cohort_step(state(0, 6), state(0, 22), WEEK_MS)
    assert back is not None and not back.retained
    assert back.period - back.cohort == 3


def live(registry: CollectorRegistry, periods: int = 2) -> LiveCohorts:
    return LiveCohorts(CONFIG, WEEK_MS, periods, CohortGauges(Metrics(registry)), lambda: {"acme"})


def test_live_cells_persist_publish_and_come_back_after_a_restart() -> None:
    registry = CollectorRegistry()
    cohorts = live(registry)
    table: dict[bytes, bytes] = {}
    cohorts.on_event(0, "a", None, state(0, 0), table)
    cohorts.on_event(0, "b", None, state(1, 1, tenant="initech"), table)
    cohorts.on_event(0, "a", state(0, 0), state(0, 8), table)
    cohorts.on_event(0, "a", state(0, 8), state(0, 9), table)  # the same week: nothing
    first = cohorts.take_records(0)
    assert sum(r.active for r in first) == 3
    assert cohorts.take_records(0) == []  # published once
    stored = {k: unpack_counts(v) for k, v in table.items()}
    assert sum(c.active for c in stored.values()) == 3
    assert sum(c.retained for c in stored.values()) == 1
    # a new owner (after a crash) loads the cells and publishes every one again
    again = live(CollectorRegistry())
    assert again.load(0, table.items(), T0 + 9 * DAY_MS) == len(table)
    assert sorted(msgspec.json.encode(r) for r in again.take_records(0)) == sorted(
        msgspec.json.encode(r) for r in first
    )
    # cells of other partitions are not this one's
    assert again.load(1, table.items(), T0) == 0


def test_gauges_show_recent_cohorts_and_growth_with_bounded_labels() -> None:
    registry = CollectorRegistry()
    cohorts = live(registry, periods=2)
    table: dict[bytes, bytes] = {}
    cohorts.on_event(0, "old", None, state(0, 0), table)
    cohorts.on_event(0, "a", None, state(7, 7), table)
    cohorts.on_event(0, "b", None, state(8, 8, tenant="initech"), table)
    cohorts.on_event(0, "a", state(7, 7), state(7, 15), table)
    cohorts.on_event(0, "old", state(0, 0), state(0, 16), table)
    cohorts.publish(0, T0 + 16 * DAY_MS)  # week 2: cohorts of weeks 1 and 2 are shown
    samples = [
        s
        for metric in registry.collect()
        for s in metric.samples
        if s.name in ("engagement_cohort_users", "engagement_growth_users")
    ]
    assert {s.labels["tenant"] for s in samples} <= {"acme", "other"}  # initech: not configured
    assert all("segment" not in s.labels for s in samples)
    cohort_ages = {s.labels["cohort"] for s in samples if s.name == "engagement_cohort_users"}
    assert cohort_ages == {"1"}  # week 0's cohort is too old; week 2 has no new users

    def count(name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in samples
            if s.name == name and all(s.labels[k] == v for k, v in labels.items())
        )

    assert count("engagement_cohort_users", cohort="1", age="0") == 2  # a and b in week 1
    assert count("engagement_cohort_users", cohort="1", age="1") == 1  # a in week 2
    # week 2: a retained, "old" resurrected, b churned; week 1: a and b new, nobody churned
    assert count("engagement_growth_users", kind="retained", period="0") == 1
    assert count("engagement_growth_users", kind="resurrected", period="0") == 1
    assert count("engagement_growth_users", kind="churned", period="0") == 1
    assert count("engagement_growth_users", kind="new", period="1") == 2
    cohorts.forget(0)
    assert not [
        s
        for metric in registry.collect()
        for s in metric.samples
        if s.name.startswith("engagement_c")
    ]


def test_a_bad_cell_value_is_refused() -> None:
    with pytest.raises(ValueError, match="8 expected"):
        unpack_counts(b"\x00" * 7)
    counts = CellCounts(5, 2)
    assert unpack_counts(pack_counts(counts)) == counts
    key = cell_key(3, Cell("a:b", "", "holdout", 1, 2))
    assert key.startswith(b"3:cohort:")


def test_an_unreadable_cell_is_left_out_and_logged_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table: dict[bytes, bytes] = {}
    cohorts = live(CollectorRegistry())
    cohorts.on_event(0, "a", None, state(0, 0), table)
    table[b"0:cohort:[not json"] = pack_counts(CellCounts(1, 0))
    table[cell_key(0, Cell("", "", "treatment", 1, 1))] = b"short"
    again = live(CollectorRegistry())
    assert again.load(0, table.items(), T0) == 1
    assert "2 cohort cells unreadable" in caplog.text


def test_the_demo_prints_the_previous_periods_growth_from_the_gauges() -> None:
    registry = CollectorRegistry()
    cohorts = live(registry)
    table: dict[bytes, bytes] = {}
    # week 0: a, b, c arrive; week 1: a stays, d arrives (b and c churn)
    for user, day in (("a", 0), ("b", 1), ("c", 2), ("d", 9)):
        cohorts.on_event(0, user, None, state(day, day), table)
    cohorts.on_event(0, "a", state(0, 0), state(0, 8), table)
    cohorts.publish(0, T0 + 15 * DAY_MS)  # week 2: week 1 is the previous period
    line = growth_line(generate_latest(registry).decode())
    assert line == (
        "previous cohort period: new 1, retained 1, resurrected 0, churned 2, quick ratio 0.50"
    )
