"""The fault suite's verdict sees each kind of fault: a worker whose outputs are
exactly what its record processor produced is judged clean, and each planted
fault (a lost or doubled event, a changed state field, a missing, invented or
altered signal, a missing or copied DLQ record) shows in its own figure."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field, replace

import msgspec
from support.engine_outcome import PackedStore
from support.fault_figures import FeedLedger, Figures, Outputs
from support.fault_verdict import judge
from support.kafka_util import Record

from streams.control import signer_for
from streams.decode import Control, DecodeRules, decode_record
from streams.inputs import control_input
from streams.model_settings import model_config, record_rules
from streams.records import DlqRecord, LifecycleTransition, Signal, encode
from streams.settings import Settings
from streams.validate import Rejected
from tables.processor import PartitionProcessor
from tables.state import TIER_NAMES, pack_state, unpack_state

T0 = 1_800_000_000_000
SETTINGS = Settings(
    partitions=1,
    day_ms=1_000,
    at_risk_ms=3_000,
    dormant_ms=6_000,
    churned_ms=9_000,
    threshold_min_ms=1_000,
    lateness_ms=500,
    holdout_salt="verdict-salt",
    erasure_salt="erasure-salt",
)


@dataclass
class Run:
    log: list[Record] = field(default_factory=list)
    ledger: FeedLedger = field(default_factory=FeedLedger)
    outputs: Outputs = field(default_factory=lambda: Outputs([], [], [], [], [], None))


def _record(topic: str, offset: int, key: bytes | None, value: bytes, at_ms: int) -> Record:
    return Record(topic, 0, offset, at_ms, key, value, ())


def feed() -> Run:
    """Three users' events (a producer duplicate, a late event, a bad record), then
    one user's event long after: the others go at risk, dormant, churned."""
    run = Run()
    rng = random.Random(3)
    topic = SETTINGS.topic_events
    clock = T0
    recent: list[tuple[int, bytes, bytes]] = []
    for step in range(60):
        clock += rng.randrange(100, 700)
        offset = len(run.log)
        if step == 30:
            run.log.append(_record(topic, offset, b"u1", b"{not json", clock))
            run.ledger.landed(run.ledger.poison("not_json"), 0, offset)
            continue
        if step == 40:  # a producer duplicate
            tag, key, value = recent[-2]
            run.log.append(_record(topic, offset, key, value, clock))
            run.ledger.landed(tag, 0, offset)
            continue
        user = f"u{rng.randrange(3)}" if step < 58 else "u0"
        ts = clock - (400 if step % 9 == 0 else 0)
        if step == 59:
            clock += 30_000
            ts = clock
        event_id = f"e{step}"
        tag = run.ledger.event(event_id, user)
        body = {"event_id": event_id, "user_id": user, "type": "view", "ts": ts}
        value = json.dumps(body).encode()
        run.log.append(_record(topic, offset, user.encode(), value, clock))
        run.ledger.landed(tag, 0, offset)
        recent.append((tag, user.encode(), value))
    _work(run)
    return run


def _work(run: Run) -> None:
    """The outputs of a worker that did everything right: the record processor
    over the log, every output written once."""
    rules = DecodeRules(
        topic=SETTINGS.topic_events,
        partitions=1,
        event=SETTINGS.event_rules(),
        signer=signer_for(SETTINGS),
    )
    store = PackedStore()
    processor = PartitionProcessor(
        0, model_config(SETTINGS), store, record_rules(SETTINGS), users=store.items_list
    )
    out = run.outputs
    for record in run.log:
        at = record.timestamp_ms
        decoded = decode_record(record.key, record.value, [], 0, at, record.offset, rules)
        if isinstance(decoded, Rejected):
            dlq = DlqRecord(
                decoded.reason, "", SETTINGS.topic_events, 0, record.offset, at, None,
                base64.b64encode(record.value or b"").decode(), at,
            )  # fmt: skip
            out.dlq.append(_record("dlq", len(out.dlq), None, encode(dlq), at))
            continue
        item = control_input(decoded.record) if isinstance(decoded, Control) else decoded
        result = processor.process(item, at)
        for emission in result.emissions:
            value = encode(Signal.from_emission(emission))
            out.signals.append(_record("signals", len(out.signals), None, value, at))
        for moved in result.transitions:
            value = encode(LifecycleTransition.from_transition(moved))
            out.lifecycle.append(_record("lifecycle", len(out.lifecycle), None, value, at))
    for user, blob in store.blobs.items():
        state = unpack_state(blob)
        out.changelog.append(_record("changelog", len(out.changelog), user.encode(), blob, 0))
        status = {"last_seen": state.last_seen_ms, "tier": TIER_NAMES[state.tier] or None}
        out.status.append(
            _record("status", len(out.status), user.encode(), json.dumps(status).encode(), 0)
        )


def verdict(run: Run) -> Figures:
    return judge("unit", SETTINGS, run.log, {0: len(run.log)}, run.outputs, run.ledger, 0.0)


def test_a_worker_that_did_everything_right_is_clean() -> None:
    run = feed()
    figures = verdict(run)
    figures.assert_clean()
    assert figures.signals > 3 and figures.transitions > 5
    assert (figures.dlq, figures.dlq_copies, figures.deduplicated) == (1, 0, 1)
    assert figures.applied == figures.events_in - 2  # the bad record, the duplicate


def _changelog_edit(run: Run, user: str, field_name: str) -> None:
    """A newer changelog record of ``user`` with the integer ``field_name`` one more."""
    latest = [r for r in run.outputs.changelog if r.key == user.encode()][-1]
    state = unpack_state(latest.value or b"")
    state = msgspec.structs.replace(state, **{field_name: getattr(state, field_name) + 1})
    changed = replace(latest, offset=len(run.outputs.changelog), value=pack_state(state))
    run.outputs.changelog.append(changed)


def test_an_event_counted_twice_shows_as_double_applied_and_a_state_mismatch() -> None:
    run = feed()
    _changelog_edit(run, "u1", "events_total")
    figures = verdict(run)
    assert (figures.lost, figures.double_applied, figures.state_mismatches) == (0, 1, 1)


def test_a_state_field_the_reference_disagrees_with_is_a_mismatch() -> None:
    run = feed()
    _changelog_edit(run, "u2", "streak_days")
    figures = verdict(run)
    assert (figures.lost, figures.double_applied, figures.state_mismatches) == (0, 0, 1)
    assert any("streak_days" in example for example in figures.examples)


def test_signals_missing_invented_and_altered_are_each_counted() -> None:
    run = feed()
    signals = run.outputs.signals
    first, second = json.loads(signals[0].value or b""), json.loads(signals[1].value or b"")
    del signals[0]
    second["risk"] += 0.01
    invented = {**second, "signal_id": "u9:1:at_risk"}
    for body in (second, invented):
        signals.append(_record("signals", len(signals), None, json.dumps(body).encode(), 0))
    figures = verdict(run)
    assert (figures.signals_missing, figures.signals_extra, figures.signals_different) == (1, 1, 1)
    assert figures.duplicate_signal_ids == 1  # the altered copy of the second
    assert any(first["signal_id"] in example for example in figures.examples)


def test_a_missing_dlq_record_is_lost_and_a_copy_is_counted() -> None:
    run = feed()
    copy = replace(run.outputs.dlq[0], offset=1)
    run.outputs.dlq.append(copy)
    assert verdict(run).dlq_copies == 1
    run.outputs.dlq.clear()
    figures = verdict(run)
    assert (figures.dlq, figures.lost) == (0, 1)


def test_an_event_the_feed_landed_but_the_log_lacks_is_lost() -> None:
    run = feed()
    run.ledger.landed(run.ledger.event("e-never", "u1"), 0, 10_000)
    assert verdict(run).lost == 1
