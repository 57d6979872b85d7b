"""What the fault suite's verdict reads and what it reports: the feed's record of
what it sent, the outputs read back, the figures of one scenario."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from support.kafka_util import Record


@dataclass
class FeedLedger:
    """What the feed sent and where it landed (acknowledged sends only).

    A record's tag: ``n > 0`` is the feed's event ``n`` (``event_ids[n - 1]`` of
    ``users[n - 1]``; a producer duplicate carries its original's tag),
    ``-k - 1`` its bad record ``k`` (meant to earn ``poison_reasons[k]``), 0 a
    record the feed does not know (not checked against the ledger)."""

    event_ids: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    poison_reasons: list[str] = field(default_factory=list)
    tags: array[int] = field(default_factory=lambda: array("q"))
    partitions: array[int] = field(default_factory=lambda: array("i"))
    offsets: array[int] = field(default_factory=lambda: array("q"))

    def event(self, event_id: str, user: str) -> int:
        self.event_ids.append(event_id)
        self.users.append(user)
        return len(self.event_ids)

    def poison(self, reason: str) -> int:
        self.poison_reasons.append(reason)
        return -len(self.poison_reasons)

    def landed(self, tag: int, partition: int, offset: int) -> None:
        self.tags.append(tag)
        self.partitions.append(partition)
        self.offsets.append(offset)

    def entries(self) -> list[tuple[int, int, int]]:
        """(partition, offset, tag) of every acknowledged record."""
        return list(zip(self.partitions, self.offsets, self.tags, strict=True))


@dataclass
class RedisView:
    """The mirror's keys of one deployment: user hashes, at-risk sets and members."""

    hashes: dict[str, dict[str, str]]
    at_risk: dict[str, set[str]]


@dataclass
class Outputs:
    """Every topic the workers wrote, read back whole, and the mirror."""

    signals: list[Record]
    dlq: list[Record]
    changelog: list[Record]
    status: list[Record]
    lifecycle: list[Record]
    redis: RedisView | None


@dataclass
class Figures:
    scenario: str
    events_in: int
    applied: int
    dlq: int
    deduplicated: int
    suppressed: int
    lost: int
    double_applied: int
    signals: int
    signals_missing: int
    signals_extra: int
    duplicate_signal_ids: int
    transitions_missing: int
    transitions_extra: int
    redis_mismatches: int | None
    status_mismatches: int
    recovery_s: float
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # of mismatches, for the failure message
    notes: list[str] = field(default_factory=list)
    store: str = "memory://"  # the workers' ENGAGEMENT_STORE
    # RocksDB only: keys whose value in the most advanced local database of their
    # partition differs from the changelog, plus partitions no database caught up with
    local_mismatches: int | None = None
    dlq_copies: int = 0  # DLQ records beyond one per source record (re-sent after a crash)
    state_mismatches: int = 0  # users whose table state differs from the reference's
    signals_different: int = 0  # signal ids on the topic with another payload
    transitions_different: int = 0
    transitions: int = 0

    def line(self) -> str:
        redis = "n/a" if self.redis_mismatches is None else str(self.redis_mismatches)
        local = "n/a" if self.local_mismatches is None else str(self.local_mismatches)
        return (
            f"{self.scenario} [{self.store}]: events_in={self.events_in} applied={self.applied} "
            f"dlq={self.dlq} dlq_copies={self.dlq_copies} deduplicated={self.deduplicated} "
            f"suppressed={self.suppressed} lost={self.lost} "
            f"double_applied={self.double_applied} state_mismatches={self.state_mismatches} "
            f"signals={self.signals} missing={self.signals_missing} "
            f"extra={self.signals_extra} different={self.signals_different} "
            f"duplicate_signal_ids={self.duplicate_signal_ids} transitions={self.transitions} "
            f"transitions_missing={self.transitions_missing} "
            f"transitions_extra={self.transitions_extra} "
            f"transitions_different={self.transitions_different} redis_mismatches={redis} "
            f"local_mismatches={local} status_mismatches={self.status_mismatches} "
            f"recovery_s={self.recovery_s:.1f}"
        )

    def assert_clean(self, details: str = "") -> None:
        bad = {
            "lost": self.lost,
            "double_applied": self.double_applied,
            "state_mismatches": self.state_mismatches,
            "signals_missing": self.signals_missing,
            "signals_extra": self.signals_extra,
            "signals_different": self.signals_different,
            "transitions_missing": self.transitions_missing,
            "transitions_extra": self.transitions_extra,
            "transitions_different": self.transitions_different,
            "redis_mismatches": self.redis_mismatches or 0,
            "local_mismatches": self.local_mismatches or 0,
            "status_mismatches": self.status_mismatches,
        }
        notes = "\n".join(self.examples + self.notes)
        assert not any(bad.values()), f"{self.line()}\n{notes}\n{details}"


def last_per_key(records: list[Record]) -> dict[bytes, bytes | None]:
    out: dict[bytes, bytes | None] = {}
    for record in records:
        if record.key is not None:
            out[record.key] = record.value
    return out
