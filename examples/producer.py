"""Publish user events to the engine's input topic, the way the contract asks.

    python examples/producer.py --broker localhost:29092 --input events.jsonl
    python examples/producer.py --broker localhost:29092 --sample-users 20000

Each input line is one *logical* event: ``{"user_id", "type", "ts",
"event_id" | "ref"?, "tenant"?, "segment"?, "props"?}`` (``ts`` in epoch ms or RFC 3339). It
prints ``{"sent": N, "seconds": S, "events_per_s": R}`` when every record is
acknowledged.

What "done right" means here:

- **A stable ``event_id`` per logical event.** It is fixed when the event is
  recorded, never when it is sent: the line's own ``event_id``, else the
  producer's reference (``ref``, e.g. an order id plus what happened to it)
  when there is one, else a UUIDv5
  of the event's content. Sending the same file again (a retry after a
  timeout, a crashed batch job run twice) sends the same ids, and the engine
  drops them as duplicates instead of counting the user twice.
- **Key = user id (UTF-8), Kafka's default murmur2 partitioner.** aiokafka's
  default partitioner is the Java client's murmur2, so every event of a
  user lands in the partition that holds the user's state (other clients:
  docs/OPERATIONS.md, "Producers"). Events in another partition go to the
  DLQ as ``wrong_partition``.
- **Batched, acknowledged by the whole in-sync replica set.** Records fill
  one batch per partition (up to ``--batch-bytes``), sent when full without
  waiting for it; at most ``--in-flight-batches`` wait for their
  acknowledgement at once, and the partly filled ones go at the end. With
  ``acks="all"`` and idempotence the client's own retries never write a
  record twice; a batch that still fails is sent again, the same bytes.
- **TLS and SASL** from flags or the worker's own variables
  (``ENGAGEMENT_BROKER``, ``ENGAGEMENT_TOPIC_EVENTS``,
  ``ENGAGEMENT_KAFKA_SECURITY_PROTOCOL``, ``..._SASL_MECHANISM``,
  ``..._SASL_USERNAME``, ``..._SASL_PASSWORD``, ``..._SSL_CAFILE``,
  ``..._SSL_CERTFILE``, ``..._SSL_KEYFILE``). The password is read from the
  environment only, never from the command line (where ``ps`` shows it):
  ``..._SASL_PASSWORD``, or as the worker reads a secret, the file
  ``..._SASL_PASSWORD_FILE`` names (its trailing line break dropped).

Only the standard library and aiokafka: copy it into your producer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

log = logging.getLogger("producer")
# Any fixed namespace works; it must never change once ids are in use.
EVENT_NAMESPACE = uuid.UUID("6f1c1a52-3c1e-4d7a-9a55-2b8f0c2e7d11")
CONTENT_FIELDS = ("user_id", "type", "ts", "tenant", "segment", "props")
SEND_ATTEMPTS = 5
ENV_PREFIX = "ENGAGEMENT_"


def event_id(logical: Mapping[str, Any]) -> str:
    """The stable id of a logical event: its own id or reference, else a hash of its content."""
    own = logical.get("event_id") or logical.get("ref")
    if own:
        return str(own)
    content = {k: logical[k] for k in CONTENT_FIELDS if logical.get(k) is not None}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(uuid.uuid5(EVENT_NAMESPACE, canonical))


def contract_event(logical: Mapping[str, Any]) -> dict[str, Any]:
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


def bootstrap_servers(broker: str) -> str:
    """``host:port,...`` from the worker's form (``kafka://host:port;host:port``)."""
    hosts = (part.strip().removeprefix("kafka://") for part in broker.replace(";", ",").split(","))
    return ",".join(host for host in hosts if host)


def client_options(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """aiokafka keyword arguments for the connection: brokers, TLS, SASL."""
    protocol = args.security_protocol.upper()
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(args.broker),
        "security_protocol": protocol,
    }
    if "SSL" in protocol:
        context = ssl.create_default_context(cafile=args.ssl_cafile)
        if args.ssl_certfile:
            context.load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
        options["ssl_context"] = context
    if protocol.startswith("SASL"):
        if not args.sasl_mechanism:
            raise SystemExit(f"{protocol} needs --sasl-mechanism")
        password = sasl_password(env)
        if not args.sasl_username or password is None:
            raise SystemExit(
                f"{protocol} needs --sasl-username and {ENV_PREFIX}KAFKA_SASL_PASSWORD"
            )
        options.update(
            sasl_mechanism=args.sasl_mechanism.upper(),
            sasl_plain_username=args.sasl_username,
            sasl_plain_password=password,
        )
    return options


def sasl_password(env: Mapping[str, str]) -> str | None:
    """``ENGAGEMENT_KAFKA_SASL_PASSWORD``, or the content of the file its ``_FILE``
    variant names (as the worker reads secrets); both set is refused. Errors name
    the variable and the path, never the secret."""
    name = f"{ENV_PREFIX}KAFKA_SASL_PASSWORD"
    path = env.get(name + "_FILE")
    if path is None:
        return env.get(name)
    if name in env:
        raise SystemExit(f"both {name} and {name}_FILE are set: give the password one way only")
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise SystemExit(f"{name}_FILE: cannot read {path!r}: {reason}") from None


_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(event: Mapping[str, Any]) -> tuple[bytes, bytes]:
    key = str(event["user_id"]).encode("utf-8")
    value = _json.encode(event).encode("utf-8")
    return key, value


class KeyPartitions:
    """Kafka's default partition of a key (murmur2, as the Java client), remembered per key.

    aiokafka computes the same murmur2 in pure Python for every record; a user
    sends many events, so the answer is kept (up to ``MAX_KEYS`` keys).
    """

    MAX_KEYS = 200_000

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._known: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        partition = self._known.get(key)
        if partition is None:
            if len(self._known) >= self.MAX_KEYS:
                self._known.clear()
            partition = self._known[key] = (murmur2(key) & 0x7FFFFFFF) % self.partitions
        return partition


@dataclass
class Batch:
    """Records bound for one partition, built into one produce request."""

    partition: int
    builder: Any
    records: list[tuple[bytes, bytes]] = field(default_factory=list)


class Publisher:
    """Fills one batch per partition and sends it when full, without waiting for it.

    At most ``in_flight`` batches wait for their acknowledgement at once; a
    batch that fails for a passing reason is rebuilt from its records and sent
    again (the same bytes); any other failure stops the run.
    """

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, partition_of: KeyPartitions, in_flight: int
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._partition_of = partition_of
        self._in_flight = in_flight
        self._open: dict[int, Batch] = {}
        self._pending: list[tuple[asyncio.Future[Any], Batch]] = []
        self.sent = 0

    def _new_batch(self, partition: int) -> Batch:
        batch = self._open[partition] = Batch(partition, self._producer.create_batch())
        return batch

    async def send(self, key: bytes, value: bytes) -> None:
        partition = self._partition_of(key)
        batch = self._open.get(partition) or self._new_batch(partition)
        if batch.builder.append(key=key, value=value, timestamp=None) is None:
            await self._ship(batch)
            batch = self._new_batch(partition)
            if batch.builder.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value)} bytes exceeds --batch-bytes")
        batch.records.append((key, value))

    async def _ship(self, batch: Batch) -> None:
        del self._open[batch.partition]
        future = await self._producer.send_batch(
            batch.builder, self._topic, partition=batch.partition
        )
        self._pending.append((future, batch))
        if len(self._pending) >= self._in_flight:
            await self._settle()

    async def flush(self) -> None:
        """Send the partly filled batches and wait for every acknowledgement."""
        for batch in list(self._open.values()):
            await self._ship(batch)
        await self._settle()

    async def _settle(self) -> None:
        failed: list[Batch] = []
        for attempt in range(1, SEND_ATTEMPTS + 1):
            pending, self._pending = self._pending, []
            for future, batch in pending:
                try:
                    await future
                    self.sent += len(batch.records)
                except KafkaError as exc:
                    if not exc.retriable:  # e.g. a batch the topic refuses as too large
                        raise RuntimeError(f"batch refused: {type(exc).__name__}") from exc
                    log.warning("batch failed (%s), will retry", type(exc).__name__)
                    failed.append(batch)
            if not failed:
                return
            if attempt == SEND_ATTEMPTS:
                raise RuntimeError(f"{len(failed)} batches not acknowledged after retries")
            # If a failed try did land after all, the engine drops the copies by event_id.
            await asyncio.sleep(0.2 * 2**attempt)
            for old in failed:
                batch = Batch(old.partition, self._producer.create_batch(), old.records)
                for key, value in old.records:
                    batch.builder.append(key=key, value=value, timestamp=None)
                future = await self._producer.send_batch(
                    batch.builder, self._topic, partition=batch.partition
                )
                self._pending.append((future, batch))
            failed = []


async def publish(
    args: argparse.Namespace, env: Mapping[str, str], events: Iterable[Mapping[str, Any]]
) -> int:
    producer = AIOKafkaProducer(
        **client_options(args, env),
        acks="all",
        enable_idempotence=True,
        max_batch_size=args.batch_bytes,
    )
    await producer.start()
    try:
        partitions = await producer.partitions_for(args.topic)
        publisher = Publisher(
            producer, args.topic, KeyPartitions(len(partitions)), args.in_flight_batches
        )
        for logical in events:
            await publisher.send(*encode(contract_event(logical)))
        await publisher.flush()
    finally:
        await producer.stop()
    return publisher.sent


def parser_for(env: Mapping[str, str]) -> argparse.ArgumentParser:
    def default(name: str, fallback: str | None = None) -> str | None:
        return env.get(ENV_PREFIX + name, fallback)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=default("BROKER", "localhost:9092"))
    parser.add_argument("--topic", default=default("TOPIC_EVENTS", "engagement.events"))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="JSON Lines of logical events")
    source.add_argument("--sample-users", type=int, help="generate a sample history")
    parser.add_argument("--events-per-user", type=int, default=3)
    parser.add_argument("--batch-bytes", type=int, default=256 * 1024)
    parser.add_argument("--in-flight-batches", type=int, default=64)
    security = parser.add_argument_group("TLS and SASL")
    security.add_argument(
        "--security-protocol",
        default=default("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
        type=str.upper,
    )
    security.add_argument(
        "--sasl-mechanism",
        default=default("KAFKA_SASL_MECHANISM"),
        help="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
    )
    security.add_argument("--sasl-username", default=default("KAFKA_SASL_USERNAME"))
    security.add_argument("--ssl-cafile", default=default("KAFKA_SSL_CAFILE"))
    security.add_argument("--ssl-certfile", default=default("KAFKA_SSL_CERTFILE"))
    security.add_argument("--ssl-keyfile", default=default("KAFKA_SSL_KEYFILE"))
    return parser


def main(argv: list[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    args = parser_for(env).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.input is not None:
        events: Iterable[Mapping[str, Any]] = read_lines(args.input)
    else:
        events = sample_events(args.sample_users, args.events_per_user, int(time.time() * 1000))
    started = time.perf_counter()
    sent = asyncio.run(publish(args, env, events))
    seconds = time.perf_counter() - started
    rate = round(sent / seconds) if seconds > 0 else 0
    print(json.dumps({"sent": sent, "seconds": round(seconds, 3), "events_per_s": rate}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
