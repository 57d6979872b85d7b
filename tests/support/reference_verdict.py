"""The reference model's verdict on a worker's table, from the raw input log.

For a check after a run (the agent tests, the fault suite): run the
independent reference (``reference.log``) over every record of the input
topic and compare each user's state in the worker's table with it, field by
field.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from reference.log import LogOutcome, LogRules, RawRecord, run_log
from reference.records import UserView

from streams.decode import id_hash
from streams.settings import Settings
from support.engine_outcome import rules_for, view_of
from tables.state import UserState


def run_reference_log(settings: Settings, log: list[RawRecord]) -> LogOutcome:
    log_rules = LogRules(
        topic=settings.topic_events,
        partitions=settings.partitions,
        keys=settings.clock_key_map(),
        max_event_bytes=settings.max_event_bytes,
        max_future_ms=settings.max_future_ms,
        min_ts_ms=settings.min_ts_ms,
        max_user_id_bytes=settings.max_user_id_bytes,
        max_event_id_bytes=settings.max_event_id_bytes,
        max_label_bytes=settings.max_label_bytes,
    )
    return run_log(log, rules_for(settings), log_rules)


def reference_states(outcome: LogOutcome) -> dict[str, UserView]:
    return {user: view for out in outcome.partitions.values() for user, view in out.states.items()}


def state_mismatches(
    outcome: LogOutcome, log: list[RawRecord], table: dict[str, UserState]
) -> list[str]:
    """One line per user whose table state differs from the reference's (or who is
    in only one of them), naming the fields that differ."""
    event_ids: dict[int, str] = {}  # the table keeps hashes of event ids
    for record in log:
        try:
            body = json.loads(record.value or b"")
        except ValueError:
            continue
        if isinstance(body, dict) and isinstance(body.get("event_id"), str):
            event_ids[id_hash(body["event_id"])] = body["event_id"]
    expected = reference_states(outcome)
    problems = []
    for user in sorted(set(table) | set(expected)):
        if user not in table or user not in expected:
            problems.append(f"{user}: only in the {'reference' if user in expected else 'table'}")
            continue
        got, want = asdict(view_of(table[user], event_ids)), asdict(expected[user])
        fields = [
            f"{name} {got[name]!r} != {want[name]!r}" for name in got if got[name] != want[name]
        ]
        if fields:
            problems.append(f"{user}: " + "; ".join(fields))
    return problems
