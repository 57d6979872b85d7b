"""The bench's two traffic shapes, as ``(key, value, partition)`` records.

- ``uniform``: every user's events spread evenly over one hour, users in
  turn, so no user sends two events close together: nothing coalesces (the
  worst case for the worker's outputs).
- ``session``: the simulator's default population (``engagement simulate``'s
  seed, habits and mix, ``agents.simulation.population``) with real days,
  from its day 0 on until the event count is reached: bursts of a few events
  per visit, a daily rhythm, and a long tail of users who come weekly,
  monthly or once. Its history as a producer logs it (about 1 % duplicates
  and 2 % late events).

Both shapes have the same number of events over the same number of users.
"""

from __future__ import annotations

from itertools import islice
from typing import Final

import msgspec

from agents.simulation.population import Population
from streams.decode import partition_for

SHAPES: Final = ("uniform", "session")
SIMULATOR_SEED: Final = 7  # ``engagement simulate --seed`` default
DAY_MS: Final = 86_400_000
Record = tuple[bytes, bytes, int]


def uniform_events(events: int, users: int, start_ms: int, partitions: int) -> list[Record]:
    """~150-byte events, user ``n * 7919 mod users`` at ``start_ms`` + n steps over an hour."""
    out = []
    step_ms = max(1, (60_000 * 60) // events)
    for n in range(events):
        user = f"u{(n * 7919) % users:07d}"
        key = user.encode()
        value = (
            f'{{"event_id":"e{n:09d}","user_id":"{user}","type":"view",'
            f'"ts":{start_ms + n * step_ms},"tenant":"acme","props":{{"page":"p{n % 50}"}}}}'
        ).encode()
        out.append((key, value, partition_for(key, partitions)))
    return out


def session_events(events: int, users: int, end_ms: int, partitions: int) -> list[Record]:
    """The first ``events`` events of the simulator's default population of
    ``users``, whose day 0 starts as many days before ``end_ms`` as its
    history needs (at least one): the newest event stays before ``end_ms``."""
    days = 1
    while True:
        start_ms = (end_ms // DAY_MS - days) * DAY_MS
        population = Population(users, SIMULATOR_SEED, DAY_MS, start_ms)
        history = list(islice(population.history(days), events))
        if len(history) >= events or days >= 3650:
            break
        days = max(days + 1, days * events // max(len(history), 1) + 1)
    encode = msgspec.json.encode
    out = []
    for event in history:
        key = event["user_id"].encode()
        out.append((key, encode(event), partition_for(key, partitions)))
    return out


def shape_events(shape: str, events: int, users: int, now_ms: int, partitions: int) -> list[Record]:
    """The records of ``shape``; all of them before ``now_ms``."""
    if shape == "uniform":
        return uniform_events(events, users, now_ms - 3_600_000, partitions)
    if shape == "session":
        return session_events(events, users, now_ms, partitions)
    raise ValueError(f"unknown traffic shape {shape!r}; known: {', '.join(SHAPES)}")
