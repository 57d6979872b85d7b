"""The reference model's verdict on a worker's outputs, from the raw input log.

For a check after a run (the agent tests, the fault suite): run the
independent reference (``reference.log``) over every record of the input
topic and compare each user's state in the worker's table with it, field by
field, and output payloads with its payloads (``close``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from reference.log import LogOutcome, LogRules, RawRecord, run_log
from reference.records import UserView

from streams.decode import id_hash
from streams.settings import Settings
from support.engine_outcome import rules_for, view_of
from tables.state import UserState

# risks: the engine's closed form against the reference's numeric integration
RISK_TOLERANCE = 1e-5


def run_reference_log(
    settings: Settings, log: list[RawRecord], marks: dict[int, int] | None = None
) -> LogOutcome:
    """The reference over ``log``; ``marks`` (per partition, an offset): also what each
    partition holds before every record from it on (``reference.log.run_log``)."""
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
    return run_log(log, rules_for(settings), log_rules, marks=marks)


def reference_states(outcome: LogOutcome) -> dict[str, UserView]:
    return {user: view for out in outcome.partitions.values() for user, view in out.states.items()}


def event_ids_of(log: list[RawRecord]) -> dict[int, str]:
    """Id hash -> event id of every event id in ``log`` (the table keeps hashes)."""
    event_ids: dict[int, str] = {}
    for record in log:
        try:
            body = json.loads(record.value or b"")
        except ValueError:
            continue
        if isinstance(body, dict) and isinstance(body.get("event_id"), str):
            event_ids[id_hash(body["event_id"])] = body["event_id"]
    return event_ids


def field_differences(got: UserView, want: UserView) -> list[str]:
    mine, theirs = asdict(got), asdict(want)
    return [
        f"{name} {mine[name]!r} != {theirs[name]!r}" for name in mine if mine[name] != theirs[name]
    ]


def state_mismatches(
    outcome: LogOutcome, log: list[RawRecord], table: dict[str, UserState]
) -> list[str]:
    """One line per user whose table state differs from the reference's (or who is
    in only one of them), naming the fields that differ."""
    event_ids = event_ids_of(log)
    expected = reference_states(outcome)
    problems = []
    for user in sorted(set(table) | set(expected)):
        if user not in table or user not in expected:
            problems.append(f"{user}: only in the {'reference' if user in expected else 'table'}")
            continue
        fields = field_differences(view_of(table[user], event_ids), expected[user])
        if fields:
            problems.append(f"{user}: " + "; ".join(fields))
    return problems


def close(engine: Any, reference: Any, path: str, problems: list[str]) -> None:
    """Add to ``problems`` where ``engine`` differs from ``reference`` (decoded JSON
    values; floats within ``RISK_TOLERANCE``)."""
    if isinstance(engine, dict) and isinstance(reference, dict):
        for key in sorted(set(engine) | set(reference)):
            if key not in engine or key not in reference:
                side = "engine" if key not in engine else "reference"
                problems.append(f"{path}.{key}: missing in the {side}")
            else:
                close(engine[key], reference[key], f"{path}.{key}", problems)
    elif isinstance(engine, list) and isinstance(reference, list):
        for index, (mine, theirs) in enumerate(zip(engine, reference, strict=False)):
            close(mine, theirs, f"{path}[{index}]", problems)
        if len(engine) != len(reference):
            longer, side = (
                (engine, "engine") if len(engine) > len(reference) else (reference, "reference")
            )
            extra = longer[min(len(engine), len(reference)) :]
            problems.append(f"{path}: {len(extra)} more in the {side}, from {extra[0]!r}")
    elif (
        isinstance(engine, float)
        and isinstance(reference, float)
        and math.isclose(engine, reference, rel_tol=0, abs_tol=RISK_TOLERANCE)
    ):
        return
    elif engine != reference:
        problems.append(f"{path}: engine {engine!r} != reference {reference!r}")
