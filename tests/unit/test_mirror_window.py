"""The Redis mirror's write schedule: stage or tier changes at once, the rest once per window."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.worker.mirror_window import MirrorWindow
from tables.state import TIER_AT_RISK, TIER_DORMANT, TIER_NONE, UserState


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def state(tier: int = TIER_NONE, stage: int = 1, events: int = 1) -> UserState:
    return UserState(
        first_seen_ms=0,
        last_seen_ms=events,
        active_days=1,
        events_total=events,
        tier=tier,
        stage=stage,
    )


def test_a_first_change_and_a_stage_or_tier_change_are_urgent_others_are_not() -> None:
    window = MirrorWindow(1.0, 1000)
    assert window.note("u", state(events=1))  # never written: at once
    assert not window.note("u", state(events=2))
    assert window.note("u", state(TIER_AT_RISK, events=3))
    assert not window.note("u", state(TIER_AT_RISK, events=4))
    assert window.note("u", state(TIER_AT_RISK, stage=2, events=5))
    assert window.note("u", None)  # an erasure
    assert list(window.urgent) == ["u"]


def test_between_passes_only_urgent_users_are_taken() -> None:
    clock = Clock()
    window = MirrorWindow(1.0, 1000, clock=clock)
    pending: dict[str, UserState | None] = {}
    for user in ("a", "b"):
        pending[user] = state(events=1)
        window.note(user, pending[user])
    assert [u for u, _ in window.choose(pending, 10, everything=False)] == ["a", "b"]
    pending["a"] = state(events=2)
    window.note("a", pending["a"])  # same stage and tier: waits for the pass
    pending["b"] = state(TIER_DORMANT, events=2)
    window.note("b", pending["b"])
    assert not window.in_pass(len(pending))
    assert [u for u, _ in window.choose(pending, 10, everything=False)] == ["b"]
    assert list(pending) == ["a"]
    clock.now_s = 1.0
    assert window.in_pass(len(pending))
    assert window.choose(pending, 10, everything=True) == [("a", state(events=2))]
    assert pending == {} and not window.in_pass(0)


def test_a_pass_writes_the_users_pending_when_it_began_in_batches() -> None:
    clock = Clock()
    window = MirrorWindow(1.0, 1000, clock=clock)
    pending: dict[str, UserState | None] = {f"u{n}": state() for n in range(5)}
    clock.now_s = 1.0
    assert window.in_pass(len(pending))
    first = window.choose(pending, 3, everything=True)
    pending["late"] = state()  # arrives during the pass: the next window's
    second = window.choose(pending, 3, everything=True)
    assert [u for u, _ in first + second] == [f"u{n}" for n in range(5)]
    assert not window.in_pass(len(pending))
    assert list(pending) == ["late"]


def test_a_pass_starts_early_when_the_backlog_reaches_half_its_bound() -> None:
    window = MirrorWindow(60.0, 10, clock=Clock())
    assert not window.in_pass(4)
    assert window.in_pass(5)


def test_a_forgotten_user_is_urgent_again() -> None:
    window = MirrorWindow(1.0, 1000, remembered_users=2)
    for user in ("a", "b", "c"):
        window.note(user, state())
    assert window.note("a", state())  # the longest remembered was forgotten
    assert not window.note("c", state())


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.booleans(), st.integers(1, 400)), min_size=1, max_size=200
    )
)
def test_each_user_is_written_once_per_window_plus_its_stage_or_tier_changes(
    changes: list[tuple[int, bool, int]],
) -> None:
    """A writer driving the window as the mirror's task does, over simulated time:
    per user, writes <= windows elapsed + 1 + urgent changes, and the newest
    state of every user is written by the end."""
    clock = Clock()
    window = MirrorWindow(1.0, 1000, clock=clock)
    pending: dict[str, UserState | None] = {}
    written: dict[str, list[UserState | None]] = {}
    urgent_changes: dict[str, int] = {}
    tiers: dict[str, int] = {}

    def write_some() -> None:
        everything = window.in_pass(len(pending))
        for user, value in window.choose(pending, 3, everything):
            written.setdefault(user, []).append(value)

    for events, (user_n, tier_change, step_ms) in enumerate(changes, 1):
        user = f"u{user_n}"
        if tier_change:
            tiers[user] = TIER_AT_RISK if tiers.get(user) != TIER_AT_RISK else TIER_NONE
        value = state(tiers.get(user, TIER_NONE), events=events)
        pending[user] = value
        if window.note(user, value):
            urgent_changes[user] = urgent_changes.get(user, 0) + 1
        clock.now_s += step_ms / 1000
        write_some()
    newest = {user: values[-1] for user, values in written.items()}
    newest.update(pending)
    clock.now_s += 1.0
    while pending:
        write_some()
    windows = int(clock.now_s) + 1
    for user, values in written.items():
        assert len(values) <= windows + urgent_changes.get(user, 0)
        assert values[-1] == newest[user]
