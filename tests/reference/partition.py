"""One input partition, record by record in log order: the clock, config versions,
erasure, and every user judged on every clock move.

The partition clock (docs/CONTRACTS.md): an event contributes min(ts, R), a
tick min(wall, R, events_seen + stall guard); clock = the greatest
contribution so far - lateness. Whenever the clock moves, every user is
judged at the new clock; a threshold version that starts to apply within the
move splits it: users are first judged just before that instant with the
versions in force until then.

``every_record=False`` judges a user only when something can change what is
due for them: their own event, their erasure, a threshold version, the end.
A user's judgement depends only on their state, the clock and the versions
in force, and judging at a clock then at a later one emits what judging at
the later one emits, so the signals, transitions and states are the same;
only the record at which each is emitted differs. That makes a long log
(the fault suite's) affordable; the agreement test checks both ways.
"""

from __future__ import annotations

from typing import Any

from reference.activity import (
    ACTIVE,
    CHURN_INTENT,
    PASSIVE,
    event_class,
    in_grace,
    intent_signal,
    return_after_intent,
    tiers_withheld,
)
from reference.growth import activate, judge_decline, move_baseline
from reference.judge import advance, reactivation, thresholds, transition
from reference.records import (
    Activity,
    Config,
    Erase,
    Event,
    Outcome,
    Prefix,
    Record,
    Rules,
    Tick,
)
from reference.user import (
    User,
    apply_event,
    come_back,
    duplicate,
    first_event,
    note_event,
    view,
)

Tiers = tuple[int, int, int]


class Partition:
    def __init__(self, rules: Rules, every_record: bool = True) -> None:
        self.rules = rules
        self.every_record = every_record
        self.users: dict[str, User] = {}
        self.high_ms: int | None = None  # the greatest clock contribution so far
        # per scope, every accepted version: (effective_from, applies_from, tiers, activity)
        self.versions: dict[str, list[tuple[int, int, Tiers, Activity | None]]] = {}
        self.erased_until: dict[str, int] = {}  # user -> clock instant the suppression ends
        self.out = Outcome()
        self.index = 0  # of the record being handled

    @property
    def clock_ms(self) -> int | None:
        return None if self.high_ms is None else self.high_ms - self.rules.lateness_ms

    def run(self, records: list[Record], prefixes_from: int | None = None) -> Outcome:
        """Every record in order; with ``prefixes_from``, also what the partition
        holds before each record from that index on (``Outcome.prefixes``)."""
        for index, record in enumerate(records):
            self.index = index
            if prefixes_from is not None and index >= prefixes_from:
                self.prefix(index)
            self.out.outcomes.append(self.handle(record))
        if self.clock_ms is not None:
            self.judge_everyone(self.clock_ms)
        self.out.states = {uid: view(user, self.rules) for uid, user in self.users.items()}
        self.out.clock_ms = self.clock_ms
        if prefixes_from is not None:
            self.out.prefixes.append(
                Prefix(
                    len(records), self.out.states, len(self.out.signals), len(self.out.transitions)
                )
            )
        return self.out

    def prefix(self, index: int) -> None:
        """Keep what the first ``index`` records left, everyone judged at the clock."""
        if self.clock_ms is not None:
            self.judge_everyone(self.clock_ms)
        states = {uid: view(user, self.rules) for uid, user in self.users.items()}
        self.out.prefixes.append(
            Prefix(index, states, len(self.out.signals), len(self.out.transitions))
        )

    def handle(self, record: Record) -> str:
        if isinstance(record, Event):
            return self.event(record)
        if isinstance(record, Tick):
            bound = min(record.wall_ms, record.append_ms)
            if self.rules.stall_guard_ms > 0:
                bound = min(bound, record.events_seen_append_ms + self.rules.stall_guard_ms)
            self.move_clock(bound)
            return "tick"
        if isinstance(record, Config):
            return self.config(record)
        return self.erase(record)

    # -- the clock ---------------------------------------------------------
    def overrides_at(self, at_ms: int) -> dict[str, Tiers]:
        """Per scope, the newest accepted version that applies by ``at_ms``."""
        out: dict[str, Tiers] = {}
        for scope, versions in self.versions.items():
            for _effective, applies_from, tiers, _activity in versions:
                if applies_from <= at_ms:
                    out[scope] = tiers
        return out

    def activity_at(self, at_ms: int) -> dict[str, Activity]:
        """Per scope, the activity classes of the newest accepted version that applies
        by ``at_ms``, where it gives them."""
        out: dict[str, Activity] = {}
        for scope, versions in self.versions.items():
            applied = [v for v in versions if v[1] <= at_ms]
            if applied and applied[-1][3] is not None:
                out[scope] = applied[-1][3]
        return out

    def move_clock(self, contribution_ms: int) -> None:
        if self.high_ms is not None and contribution_ms <= self.high_ms:
            return
        before = self.clock_ms
        after = contribution_ms - self.rules.lateness_ms
        switches = sorted(
            {
                applies_from
                for versions in self.versions.values()
                for _effective, applies_from, _tiers, _activity in versions
                if (before is None or applies_from > before) and applies_from <= after
            }
        )
        for switch_ms in switches:
            self.judge_everyone(switch_ms - 1)
        self.high_ms = contribution_ms
        if self.every_record:
            self.judge_everyone(after)

    def judge_everyone(self, at_ms: int) -> None:
        for user_id in sorted(self.users):
            self.judge(user_id, at_ms)

    def judge(self, user_id: str, at_ms: int) -> None:
        user = self.users.get(user_id)
        if user is not None:
            overrides = self.overrides_at(at_ms)
            withheld = tiers_withheld(user, self.activity_at(at_ms), self.rules)
            unsignalled: list[dict[str, object]] = []
            self.emit(*advance(user, user_id, at_ms, overrides, self.rules, withheld, unsignalled))
            self.out.unsignalled.extend((self.index, signal) for signal in unsignalled)

    def emit(self, signals: list[dict[str, object]], moves: list[dict[str, object]]) -> None:
        self.out.signals.extend((self.index, signal) for signal in signals)
        self.out.transitions.extend((self.index, move) for move in moves)

    # -- records -----------------------------------------------------------
    def event(self, event: Event) -> str:
        self.move_clock(min(event.ts_ms, event.append_ms))
        clock_ms = self.clock_ms
        assert clock_ms is not None
        if clock_ms < self.erased_until.get(event.user_id, clock_ms):
            return "suppressed"
        self.judge(event.user_id, clock_ms)
        user = self.users.get(event.user_id)
        kind = event_class(user, event, self.activity_at(clock_ms), self.rules)
        # activation and decline are judged on active events outside a churn intent
        activates = user is None or user.intent_ms is None
        if user is None:
            if kind != ACTIVE:
                return "passive"
            user = self.users[event.user_id] = first_event(event, self.rules)
            self.emit(
                [], [transition(user, event.user_id, None, "new", event.ts_ms, [], self.rules)]
            )
        else:
            if kind == PASSIVE or (kind == ACTIVE and in_grace(user, event, self.rules)):
                return "passive"
            skipped = duplicate(user, event, self.rules)
            if skipped is not None:
                return skipped
            if kind != ACTIVE:
                self.not_activity(user, event, kind, clock_ms)
            else:
                self.activity(user, event, clock_ms)
        if kind == ACTIVE and activates:
            self.emit([], activate(user, event.user_id, event, self.rules))
        # a late event can make its user due at once
        self.judge(event.user_id, clock_ms)
        return "applied"

    def not_activity(self, user: User, event: Event, kind: str, clock_ms: int) -> None:
        note_event(user, event, self.rules)
        if kind == CHURN_INTENT and user.intent_ms is None:
            tiers, source = thresholds(user, self.overrides_at(clock_ms), self.rules)
            signal = intent_signal(user, event.user_id, event, tiers, source, self.rules)
            self.emit([signal], [])
            user.intent_ms = event.ts_ms
            if user.first_signal_as_of_ms is None:
                user.first_signal_as_of_ms = event.ts_ms

    def activity(self, user: User, event: Event, clock_ms: int) -> None:
        had_tier = user.tier is not None
        after_intent = user.intent_ms is not None
        if event.ts_ms > user.last_seen_ms and (
            user.tier is not None or user.intent_ms is not None
        ):
            tiers, source = thresholds(user, self.overrides_at(clock_ms), self.rules)
            signal: dict[str, Any] | None
            if user.intent_ms is not None:
                signal, moved = return_after_intent(
                    user, event.user_id, event, tiers, source, self.rules
                )
                user.intent_ms = None
            else:  # no signal when none opened the episode (each below its minimum risk)
                signal, moved = reactivation(user, event.user_id, event, tiers, source, self.rules)
            self.emit([] if signal is None else [signal], [] if moved is None else [moved])
            if user.tier is not None:
                come_back(user, event, self.rules)
            user.first_signal_as_of_ms = None
        day = event.ts_ms // self.rules.day_ms
        gap_days = day - user.last_seen_ms // self.rules.day_ms
        apply_event(user, event, self.rules)
        if gap_days > 0:  # a new newest active day
            move_baseline(user, gap_days)
            if not had_tier and not after_intent:
                overrides = self.overrides_at(clock_ms)
                self.emit(judge_decline(user, event.user_id, day, overrides, self.rules), [])

    def config(self, config: Config) -> str:
        tiers = (config.at_risk_ms, config.dormant_ms, config.churned_ms)
        if not config.scope or not 0 < tiers[0] <= tiers[1] <= tiers[2]:
            return "rejected"
        versions = self.versions.setdefault(config.scope, [])
        if versions and config.effective_from_ms <= max(v[0] for v in versions):
            return "unchanged"  # a re-sent or older version
        clock_ms = self.clock_ms
        if clock_ms is None:  # nothing has moved the clock yet
            versions.append(
                (config.effective_from_ms, config.effective_from_ms, tiers, config.activity)
            )
            return "applied"
        self.judge_everyone(clock_ms)  # with the versions in force until now
        applies_ms = max(config.effective_from_ms, clock_ms)
        versions.append((config.effective_from_ms, applies_ms, tiers, config.activity))
        self.judge_everyone(clock_ms)  # a version in force at once can make users due
        return "applied"

    def erase(self, erase: Erase) -> str:
        rules = self.rules
        if erase.issued_ms < erase.append_ms - rules.max_future_ms:
            return "stale"  # a copied old request
        if self.clock_ms is not None:
            self.judge(erase.user_id, self.clock_ms)  # what fell due before it
        self.users.pop(erase.user_id, None)
        start_ms = min(erase.issued_ms, erase.append_ms) - rules.lateness_ms
        if self.clock_ms is not None:
            start_ms = max(start_ms, self.clock_ms)
        until_ms = start_ms + rules.erasure_suppress_ms
        self.erased_until[erase.user_id] = max(until_ms, self.erased_until.get(erase.user_id, 0))
        return "erased"


def run_reference(records: list[Record], rules: Rules, every_record: bool = True) -> Outcome:
    """The outcome of one partition's records, in log order."""
    return Partition(rules, every_record).run(records)
