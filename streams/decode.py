"""Turn one raw input record into a validated event, a control record or a rejection.

Never raises on input: every way a record can be bad maps to a DLQ reason
code of docs/CONTRACTS.md. The event rules are ``streams/validate.py``'s,
shared with offline replay; this module adds what only a broker record has:
the control header and signature, the key and the partition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec
from aiokafka.partitioner import murmur2
from xxhash import xxh3_64_intdigest

from streams.control import ControlSigner
from streams.records import CONTROL_HEADER, ControlRecord
from streams.segment import input_event
from streams.validate import EventRules, Rejected, check_event, parse_object
from tables.model import ModelEvent


class Control(msgspec.Struct, frozen=True):
    record: ControlRecord


class Misrouted(msgspec.Struct, frozen=True):
    """A valid event on another partition than murmur2 of its key picks, with
    repartitioning on: it is sent on to ``partition`` (docs/CONTRACTS.md)."""

    partition: int


class DecodeRules(msgspec.Struct, frozen=True):
    topic: str
    partitions: int
    event: EventRules = EventRules()
    signer: ControlSigner | None = None
    repartition: bool = False


# The 8-byte hash of an event id kept in the user's state for de-duplication:
# XXH3, 64 bits (the C function itself: it runs once per event). Not
# cryptographic, and need not be: only one user's own recent ids are compared,
# and 64 bits make an accidental collision negligible.
id_hash: Final[Callable[[str], int]] = xxh3_64_intdigest


_HASHES: dict[bytes, int] = {}
HASHES_MAX = 65_536  # recent keys whose murmur2 is kept (pure Python, asked per event)


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key bytes, as the Java client)."""
    hashed = _HASHES.get(key)
    if hashed is None:
        if len(_HASHES) >= HASHES_MAX:
            _HASHES.clear()
        hashed = _HASHES[key] = int(murmur2(key) & 0x7FFFFFFF)
    return hashed % partitions


def decode_record(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None,
    partition: int,
    append_ms: int,
    offset: int,
    rules: DecodeRules,
) -> ModelEvent | Control | Misrouted | Rejected:
    """Classify one input record; never raises."""
    if value is None:
        return Rejected("not_json", "record has no value")
    obj = parse_object(value, rules.event)
    if isinstance(obj, Rejected):
        return obj

    control_header = _control_header(headers)
    if control_header is not None:
        record = (
            None
            if rules.signer is None
            else rules.signer.verify(rules.topic, partition, control_header, obj)
        )
        if record is None:
            return Rejected(
                "bad_signature", f"control record {control_header!r} failed verification"
            )
        return Control(record)

    obj = input_event(obj, rules.event)
    if isinstance(obj, Rejected):
        return obj
    ts_ms = check_event(obj, rules.event, append_ms)
    if isinstance(ts_ms, Rejected):
        return ts_ms
    user_id: str = obj["user_id"]
    user_bytes = user_id.encode()
    if key != user_bytes:
        return Rejected("key_mismatch", "record key differs from user_id")
    home = partition_for(user_bytes, rules.partitions)
    if home != partition:
        if rules.repartition:
            return Misrouted(home)
        return Rejected("wrong_partition", "key hashes (murmur2) to another partition")
    return ModelEvent(
        user_id=user_id,
        id_hash=id_hash(obj["event_id"]),
        type=obj["type"],
        ts_ms=ts_ms,
        append_ms=append_ms,
        partition=partition,
        offset=offset,
        tenant=obj.get("tenant"),
        segment=obj.get("segment"),
        anonymous=obj.get("anonymous"),
    )


def _control_header(headers: list[tuple[str, bytes]] | None) -> str | None:
    if not headers:
        return None
    for name, raw in headers:
        if name == CONTROL_HEADER:
            try:
                return raw.decode() if raw is not None else ""
            except UnicodeDecodeError:
                return "?"
    return None
