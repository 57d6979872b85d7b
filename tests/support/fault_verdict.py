"""The fault suite's verdict: everything the workers wrote, judged against the
independent reference model (``tests/reference``) run over the raw input log,
and against the feed's own record of what it sent.

The reference reads the input topic as the workers consumed it (partitions,
offsets, append times, headers, bytes: ticks, threshold versions, erasures and
poison included) with its own decoder and rules, importing nothing of the
code under test. A worker stopped in the middle of the log's last records
holds what some prefix of each partition produced: from the group's
committed offset (everything before it must be in the outputs) to the end of
the log. The reference keeps what each partition holds before each of those
last records (``Outcome.prefixes``), and the verdict compares the table with
the prefix that agrees best with it, so every difference left is a real one.

The feed's record (``FeedLedger``) is where every record it got an
acknowledgement for landed, with its event id and user, or the DLQ reason of
the bad record it meant to send. "Every valid event applied exactly once" is
proven from it: per user, the events the table counts are the ids the feed
landed for that user, each as many times as the contract applies it (once;
a producer duplicate arriving after ``DEDUP_IDS`` newer ids of its user twice,
docs/CONTRACTS.md), and every bad record is in the DLQ at its source
partition and offset with the reason the feed meant.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msgspec
from reference.log import LogOutcome
from reference.records import UserView

from streams.decode import id_hash
from streams.records import DlqRecord
from streams.settings import Settings
from support.engine_outcome import view_of
from support.fault_figures import FeedLedger, Figures, Outputs, RedisView, last_per_key
from support.kafka_util import Record
from support.reference_verdict import close, field_differences, run_reference_log
from tables.state import TIER_NAMES, UserState, unpack_state


class _Examples(list[str]):
    LIMIT = 16

    def add(self, what: str) -> None:
        if len(self) < self.LIMIT:
            self.append(what)


@dataclass
class _Chosen:
    """Per partition, the reference prefix the table agrees with best."""

    states: dict[str, UserView] = field(default_factory=dict)
    signal_ids: set[str] = field(default_factory=set)
    transition_ids: set[str] = field(default_factory=set)


def judge(
    name: str,
    settings: Settings,
    log: list[Record],
    committed: dict[int, int],
    outputs: Outputs,
    ledger: FeedLedger,
    recovery_s: float,
) -> Figures:
    """The figures of one scenario (see the module's docstring)."""
    reference = run_reference_log(settings, log, marks=committed)
    examples = _Examples()
    table = {
        key.decode(): unpack_state(value)
        for key, value in last_per_key(outputs.changelog).items()
        if value is not None
    }
    event_ids = {id_hash(event_id): event_id for event_id, _ in reference.event_at.values()}
    views = {user: view_of(state, event_ids) for user, state in table.items()}
    chosen = _choose_prefixes(reference, views)
    state_bad = _compare_states(views, chosen.states, examples)
    lost, double = _applied_once(reference, ledger, table, examples)
    dlq = _DlqCheck(outputs.dlq, reference, committed, ledger, examples)
    all_signals = _payloads(reference, "signals", "signal_id")
    all_transitions = _payloads(reference, "transitions", "transition_id")
    signals = _OutputCheck("signal", outputs.signals, "signal_id", all_signals, chosen.signal_ids)
    transitions = _OutputCheck(
        "transition", outputs.lifecycle, "transition_id", all_transitions, chosen.transition_ids
    )
    signals.report(examples)
    transitions.report(examples)
    counts = reference.counts()
    return Figures(
        scenario=name,
        events_in=len(reference.outcome_at) + len(reference.dlq),
        applied=sum(state.events_total for state in table.values()),
        dlq=len(dlq.quarantined),
        dlq_copies=dlq.copies,
        deduplicated=counts["duplicate_id"] + counts["duplicate_offset"],
        suppressed=counts["suppressed"],
        lost=lost + dlq.missing,
        double_applied=double + dlq.wrong,
        state_mismatches=state_bad,
        signals=len(outputs.signals),
        signals_missing=signals.missing,
        signals_extra=signals.extra,
        signals_different=signals.different,
        duplicate_signal_ids=signals.copies,
        transitions=len(outputs.lifecycle),
        transitions_missing=transitions.missing,
        transitions_extra=transitions.extra,
        transitions_different=transitions.different,
        redis_mismatches=None
        if outputs.redis is None
        else _redis_mismatches(outputs.redis, chosen.states, examples),
        status_mismatches=_status_mismatches(outputs.status, table, examples),
        recovery_s=recovery_s,
        dlq_reasons=dict(Counter(dlq.quarantined.values())),
        examples=list(examples),
    )


def _choose_prefixes(reference: LogOutcome, views: dict[str, UserView]) -> _Chosen:
    """Per partition, the prefix (committed offset .. end of the log) whose states
    differ from the table's for the fewest users (the latest of equals)."""
    chosen = _Chosen()
    table_of: dict[int, dict[str, UserView]] = {}
    for user, view in views.items():
        table_of.setdefault(view.partition, {})[user] = view
    for partition, out in reference.partitions.items():
        mine = table_of.get(partition, {})
        candidates = out.prefixes or []
        best = None
        best_bad = -1
        for prefix in candidates:
            users = set(mine) | set(prefix.states)
            bad = sum(1 for user in users if mine.get(user) != prefix.states.get(user))
            if best is None or bad <= best_bad:
                best, best_bad = prefix, bad
        if best is None:  # no prefixes kept: the end
            states, n_signals, n_transitions = out.states, len(out.signals), len(out.transitions)
        else:
            states, n_signals, n_transitions = best.states, best.signals, best.transitions
        chosen.states.update(states)
        chosen.signal_ids.update(s["signal_id"] for _, s in out.signals[:n_signals])
        chosen.transition_ids.update(t["transition_id"] for _, t in out.transitions[:n_transitions])
    return chosen


def _compare_states(
    views: dict[str, UserView], expected: dict[str, UserView], examples: _Examples
) -> int:
    bad = 0
    for user in sorted(set(views) | set(expected)):
        mine, theirs = views.get(user), expected.get(user)
        if mine == theirs:
            continue
        bad += 1
        if mine is None or theirs is None:
            examples.add(f"state of {user}: only in the {'reference' if mine is None else 'table'}")
        else:
            examples.add(f"state of {user}: " + "; ".join(field_differences(mine, theirs)))
    return bad


def _applied_once(
    reference: LogOutcome,
    ledger: FeedLedger,
    table: dict[str, UserState],
    examples: _Examples,
) -> tuple[int, int]:
    """Lost and double-applied events, per user, from the feed's record: the ids it
    landed for the user, each applied as many times as the contract says."""
    expected: Counter[str] = Counter()
    lost = 0
    known: set[tuple[int, int]] = set()
    for partition, offset, tag in ledger.entries():
        if tag <= 0:
            continue
        where = (partition, offset)
        known.add(where)
        event_id, user = ledger.event_ids[tag - 1], ledger.users[tag - 1]
        if reference.event_at.get(where) != (event_id, user):
            lost += 1
            examples.add(f"feed landed {event_id} at {where}; the log holds no such event")
            continue
        if reference.outcome_at[where] == "applied":
            expected[user] += 1
    for where, outcome in reference.outcome_at.items():  # landed without an acknowledgement
        if outcome == "applied" and where not in known:
            expected[reference.event_at[where][1]] += 1
    double = 0
    for user in sorted(set(expected) | set(table)):
        got = table[user].events_total if user in table else 0
        if got != expected[user]:
            examples.add(f"events of {user}: table {got}, the feed's ids {expected[user]}")
        lost += max(0, expected[user] - got)
        double += max(0, got - expected[user])
    return lost, double


class _DlqCheck:
    """Every bad record quarantined once per source (partition, offset), with the
    reference's reason and the feed's; copies counted."""

    def __init__(
        self,
        records: list[Record],
        reference: LogOutcome,
        committed: dict[int, int],
        ledger: FeedLedger,
        examples: _Examples,
    ) -> None:
        decoder = msgspec.json.Decoder(DlqRecord)
        self.quarantined: dict[tuple[int, int], str] = {}
        for record in records:
            item = decoder.decode(record.value or b"")
            self.quarantined[(item.partition, item.offset)] = item.reason
        self.copies = len(records) - len(self.quarantined)
        missing: set[tuple[int, int]] = set()
        wrong: set[tuple[int, int]] = set()
        for where, reason in reference.dlq.items():
            if where not in self.quarantined and where[1] < committed.get(where[0], 0):
                missing.add(where)
                examples.add(f"DLQ lacks {where} ({reason})")
        for where, reason in self.quarantined.items():
            if reference.dlq.get(where) != reason:
                wrong.add(where)
                examples.add(f"DLQ {where} {reason}, reference {reference.dlq.get(where)}")
        for partition, offset, tag in ledger.entries():
            if tag >= 0:
                continue
            where, meant = (partition, offset), ledger.poison_reasons[-tag - 1]
            got = self.quarantined.get(where)
            if got is None and where not in missing:
                missing.add(where)
                examples.add(f"DLQ lacks the feed's {meant} at {where}")
            elif got is not None and got != meant and where not in wrong:
                wrong.add(where)
                examples.add(f"DLQ {where} {got}, the feed meant {meant}")
        self.missing, self.wrong = len(missing), len(wrong)


def _payloads(reference: LogOutcome, kind: str, id_name: str) -> dict[str, dict[str, Any]]:
    return {
        payload[id_name]: payload
        for out in reference.partitions.values()
        for _, payload in getattr(out, kind)
    }


class _OutputCheck:
    """A topic of outputs by id and payload: ids the reference emitted up to the
    chosen prefixes missing, ids it never emitted, copies with another payload."""

    def __init__(
        self,
        what: str,
        records: list[Record],
        id_name: str,
        emitted: dict[str, dict[str, Any]],
        required: set[str],
    ) -> None:
        self.what = what
        seen: Counter[str] = Counter()
        self.problems: dict[str, list[str]] = {}
        for record in records:
            payload = json.loads(record.value or b"{}")
            payload.setdefault("schema_version", 1)
            key = payload[id_name]
            seen[key] += 1
            want = emitted.get(key)
            if want is not None and key not in self.problems:
                problems: list[str] = []
                close(payload, want, key, problems)
                if problems:
                    self.problems[key] = problems
        self.missing_ids = sorted(required - set(seen))
        self.extra_ids = sorted(set(seen) - set(emitted))
        self.missing, self.extra = len(self.missing_ids), len(self.extra_ids)
        self.different = len(self.problems)
        self.copies = sum(count - 1 for count in seen.values())

    def report(self, examples: _Examples) -> None:
        for key in self.missing_ids[:3]:
            examples.add(f"{self.what} missing: {key}")
        for key in self.extra_ids[:3]:
            examples.add(f"{self.what} invented: {key}")
        for problems in list(self.problems.values())[:3]:
            examples.add(f"{self.what} differs: " + "; ".join(problems[:4]))


def _redis_mismatches(redis: RedisView, expected: dict[str, UserView], examples: _Examples) -> int:
    """Users whose hash differs from the reference's state, hashes of no user, and
    at-risk set members other than the users whose stage is ``at_risk``."""
    bad: set[str] = set()
    for user, view in expected.items():
        fields = redis.hashes.get(user)
        want = {
            "events_total": str(view.events_total),
            "last_seen": str(view.last_seen_ms),
            "tier": view.tier or "none",
            "stage": view.stage,
            "tenant": view.tenant,
            "segment": view.segment,
        }
        got = None if fields is None else {name: fields.get(name) for name in want}
        if got != want:
            bad.add(user)
            examples.add(f"redis of {user}: {got} != reference {want}")
    for user in set(redis.hashes) - set(expected):
        bad.add(user)
        examples.add(f"redis hash of {user}, who has no state")
    member_of: dict[str, list[str]] = {}
    for key, members in redis.at_risk.items():
        for user in members:
            member_of.setdefault(user, []).append(key)
    for user in set(member_of) | {u for u, v in expected.items() if v.stage == "at_risk"}:
        view = expected.get(user)
        sets = member_of.get(user, [])
        tenant = None if view is None else f":tenant:{quote(view.tenant, safe='')}:"
        tenant_ok = tenant is not None and all(tenant in key for key in sets)
        if view is None or view.stage != "at_risk" or len(sets) != 1 or not tenant_ok:
            bad.add(user)
            stage = None if view is None else view.stage
            examples.add(f"at-risk sets of {user}: {sets}, reference stage {stage}")
    return len(bad)


def _status_mismatches(
    records: list[Record], table: dict[str, UserState], examples: _Examples
) -> int:
    """Users whose latest status differs from the table, statuses of no user."""
    bad = 0
    latest = last_per_key(records)
    for user, state in table.items():
        raw = latest.get(user.encode())
        doc = json.loads(raw) if raw is not None else None
        want = (state.last_seen_ms, TIER_NAMES[state.tier] or None)
        if doc is None or (doc["last_seen"], doc["tier"]) != want:
            bad += 1
            got = None if doc is None else (doc["last_seen"], doc["tier"])
            examples.add(f"status of {user}: {got} != table {want}")
    for key, value in latest.items():
        if value is not None and key.decode() not in table:
            bad += 1
            examples.add(f"status of {key.decode()} but no state")
    return bad
