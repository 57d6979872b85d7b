"""Publish user events to the engine's input topic, the way the contract asks.

    python examples/producer.py --broker localhost:29092 --input events.jsonl
    python examples/producer.py --broker localhost:29092 --sample-users 20

Each input line is one *logical* event: ``{"user_id", "type", "ts", "ref"?,
"tenant"?, "segment"?, "props"?}`` (``ts`` in epoch ms or RFC 3339).

What "done right" means here:

- **A stable ``event_id`` per logical event.** It is fixed when the event is
  recorded, never when it is sent: the producer's own reference (``ref``,
  e.g. an order id plus what happened to it) when there is one, else a UUIDv5
  of the event's content. Sending the same file again (a retry after a
  timeout, a crashed batch job run twice) sends the same ids, and the engine
  drops them as duplicates instead of counting the user twice.
- **Key = user id (UTF-8), Kafka's default murmur2 partitioner.** aiokafka's
  default partitioner is the Java client's murmur2, so every event of a
  user lands in the partition that holds the user's state (librdkafka
  clients must set ``partitioner=murmur2_random``). Events in another
  partition go to the DLQ as ``wrong_partition``.
- ``acks="all"`` and a retry loop that re-sends the *same* record.

Only the standard library and aiokafka: copy it into your producer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

log = logging.getLogger("producer")
# Any fixed namespace works; it must never change once ids are in use.
EVENT_NAMESPACE = uuid.UUID("6f1c1a52-3c1e-4d7a-9a55-2b8f0c2e7d11")
CONTENT_FIELDS = ("user_id", "type", "ts", "tenant", "segment", "props")
SEND_ATTEMPTS = 5


def event_id(logical: dict[str, Any]) -> str:
    """The stable id of a logical event: its own reference, else a hash of its content."""
    ref = logical.get("ref")
    if ref:
        return str(ref)
    content = {k: logical[k] for k in CONTENT_FIELDS if logical.get(k) is not None}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(uuid.uuid5(EVENT_NAMESPACE, canonical))


def contract_event(logical: dict[str, Any]) -> dict[str, Any]:
    """The input event of the contract (optional fields only when set)."""
    out: dict[str, Any] = {
        "event_id": event_id(logical),
        "user_id": str(logical["user_id"]),
        "type": str(logical["type"]),
        "ts": logical["ts"],
    }
    for name in ("tenant", "segment", "props"):
        if logical.get(name) is not None:
            out[name] = logical[name]
    return out


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def sample_events(users: int, per_user: int, now_ms: int) -> Iterator[dict[str, Any]]:
    """A small history: each user logs in a few times over the last hours."""
    for n in range(per_user):
        for u in range(users):
            yield {
                "ref": f"sample-u{u}-login-{n}",
                "user_id": f"u{u}",
                "type": "login",
                "ts": now_ms - (per_user - n) * 3_600_000,
                "tenant": "acme",
            }


async def send_with_retry(producer: AIOKafkaProducer, topic: str, event: dict[str, Any]) -> None:
    key = event["user_id"].encode("utf-8")
    value = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            await producer.send_and_wait(topic, key=key, value=value)
            return
        except KafkaError as exc:
            # The same bytes again: if the first try did land, the engine drops the copy.
            if attempt == SEND_ATTEMPTS:
                raise
            log.warning("send failed (%s), retry %d", type(exc).__name__, attempt)
            await asyncio.sleep(0.2 * 2**attempt)


async def publish(broker: str, topic: str, events: Iterable[dict[str, Any]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=5)
    await producer.start()
    sent = 0
    try:
        for logical in events:
            await send_with_retry(producer, topic, contract_event(logical))
            sent += 1
    finally:
        await producer.stop()
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="localhost:9092", help="host:port[,...]")
    parser.add_argument("--topic", default="engagement.events")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="JSON Lines of logical events")
    source.add_argument("--sample-users", type=int, help="generate a sample history")
    parser.add_argument("--events-per-user", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.input is not None:
        events: Iterable[dict[str, Any]] = read_lines(args.input)
    else:
        events = sample_events(args.sample_users, args.events_per_user, int(time.time() * 1000))
    sent = asyncio.run(publish(args.broker.replace("kafka://", ""), args.topic, events))
    print(json.dumps({"sent": sent}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
