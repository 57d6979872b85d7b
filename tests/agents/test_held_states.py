"""``TableStore.hold``: a batch observes, packs and writes each changed user once.

The reference is the same events applied with every state written through
at once (the stream path): the table must end byte for byte the same, and
the observers must end on the same newest state of every user.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.worker.table_store import TableStore
from streams.decode import id_hash
from streams.model_settings import model_config
from streams.settings import load_settings
from tables.engine import PartitionEngine
from tables.model import ModelEvent
from tables.state import UserState, pack_state

CONFIG = model_config(load_settings(holdout_salt="held"))

DAY_MS = 86_400_000
T0_MS = 1_760_000_000_000


def event(user: str, n: int, day: int, partition: int) -> ModelEvent:
    ts_ms = T0_MS + day * DAY_MS + n
    return ModelEvent(user, id_hash(f"e{n}"), "view", ts_ms, ts_ms, partition, n)


class Recorder:
    """An observer: every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, UserState | None]] = []

    def __call__(self, user_id: str, state: UserState | None) -> None:
        self.calls.append((user_id, state))

    def newest(self) -> dict[str, UserState | None]:
        return dict(self.calls)


def test_held_states_are_observed_and_written_once_each_in_their_own_partition() -> None:
    table: dict[bytes, bytes] = {}
    store = TableStore(table)
    seen = Recorder()
    store.observers.append(seen)
    partitions: list[int] = []
    store.write_partition = partitions.append
    ann = [UserState(first_seen_ms=1, last_seen_ms=n, partition=2) for n in (1, 2, 3)]
    bob = UserState(first_seen_ms=1, last_seen_ms=5, partition=5)
    store.hold()
    for state in ann:
        store.put("ann", state)
    store.put("bob", bob)
    assert store.get("ann") == ann[-1] and table == {} and seen.calls == []
    store.write_held(restore_partition=7)
    assert table == {b"ann": pack_state(ann[-1]), b"bob": pack_state(bob)}
    assert seen.calls == [("ann", ann[-1]), ("bob", bob)]
    assert partitions == [2, 5, 7]
    store.put("bob", ann[0])  # still holding after write_held
    assert table[b"bob"] == pack_state(bob)
    store.delete("bob")  # a deletion is observed and written at once
    assert b"bob" not in table and seen.calls[-1] == ("bob", None)
    store.release()
    store.put("ann", ann[0])  # written through again
    assert table[b"ann"] == pack_state(ann[0]) and seen.calls[-1] == ("ann", ann[0])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40)), min_size=1, max_size=120),
    st.sets(st.integers(1, 119), max_size=10),
)
def test_batches_end_with_the_same_table_and_observed_states_as_writes_through(
    raw: list[tuple[int, int]], cuts: set[int]
) -> None:
    events = [event(f"u{user}", n, day, 0) for n, (user, day) in enumerate(raw)]

    def run(batched: bool) -> tuple[dict[bytes, Any], dict[str, UserState | None]]:
        table: dict[bytes, bytes] = {}
        store = TableStore(table)
        seen = Recorder()
        store.observers.append(seen)
        engine = PartitionEngine(0, CONFIG, store)
        for n, item in enumerate(events):
            if batched and (n == 0 or n in cuts):
                store.release()
                store.hold()
            engine.on_event(item)
        store.release()
        return table, seen.newest()

    assert run(batched=True) == run(batched=False)
