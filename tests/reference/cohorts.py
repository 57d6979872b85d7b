"""Cohort retention and growth accounting, from docs/MODEL.md, over plain sets.

A user is active in the periods (``ts // period``) in which their newest
event time so far moved (an event before it is late and counts nowhere); the
cohort is the period of the first event. Retention and growth accounting are
counted from each user's set of active periods, not from running totals.
Labels (tenant, segment, group) are taken as fixed per user here: the tests
give each user one tenant and one segment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from reference.records import Event

Labels = tuple[str, str, str]


def group_of(user_id: str, salt: str, share: float) -> str:
    digest = hashlib.sha256((salt + user_id).encode()).digest()
    return "holdout" if int.from_bytes(digest[:8], "big") / 2**64 < share else "treatment"


@dataclass
class Person:
    labels: Labels
    first_ms: int
    newest_ms: int
    periods: set[int] = field(default_factory=set)


def people(events: Iterable[Event], period_ms: int, salt: str, share: float) -> dict[str, Person]:
    """Each user's labels and active periods, events taken in the given order."""
    out: dict[str, Person] = {}
    for event in events:
        person = out.get(event.user_id)
        if person is None:
            labels = (event.tenant or "", event.segment or "", group_of(event.user_id, salt, share))
            person = out[event.user_id] = Person(labels, event.ts_ms, event.ts_ms)
            person.periods.add(event.ts_ms // period_ms)
        elif event.ts_ms > person.newest_ms:
            person.newest_ms = event.ts_ms
            person.periods.add(event.ts_ms // period_ms)
    return out


def retention(
    persons: dict[str, Person], period_ms: int, last_period: int
) -> dict[tuple[Labels, int], list[int]]:
    """(labels, cohort) -> users of the cohort active in each period since it began."""
    cohorts: dict[tuple[Labels, int], list[Person]] = {}
    for person in persons.values():
        cohorts.setdefault((person.labels, person.first_ms // period_ms), []).append(person)
    return {
        key: [
            sum(1 for p in members if period in p.periods)
            for period in range(key[1], last_period + 1)
        ]
        for key, members in cohorts.items()
    }


def growth(
    persons: dict[str, Person], period_ms: int, period: int
) -> dict[Labels, tuple[int, int, int, int]]:
    """labels -> (new, retained, resurrected, churned) in ``period``."""
    out: dict[Labels, list[int]] = {}
    for person in persons.values():
        row = out.setdefault(person.labels, [0, 0, 0, 0])
        now, before = period in person.periods, period - 1 in person.periods
        first = person.first_ms // period_ms
        if now and first == period:
            row[0] += 1
        elif now and before:
            row[1] += 1
        elif now:
            row[2] += 1
        elif before:
            row[3] += 1
    return {labels: (r[0], r[1], r[2], r[3]) for labels, r in out.items()}
