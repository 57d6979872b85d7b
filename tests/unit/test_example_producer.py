"""examples/producer.py without a broker: connection options and partitions.

Its sending is tested on a real broker in tests/integration/test_producers.py.
"""

from __future__ import annotations

import importlib.util
import ssl
import sys
from pathlib import Path
from types import ModuleType

import pytest

from streams.decode import partition_for
from streams.settings import load_settings

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "producer.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_producer", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


producer = load_example()


def options(argv: list[str], env: dict[str, str]) -> dict[str, object]:
    args = producer.parser_for(env).parse_args(["--sample-users", "1", *argv])
    result: dict[str, object] = producer.client_options(args, env)
    return result


def test_broker_topic_and_sasl_come_from_the_workers_settings() -> None:
    env = {
        "ENGAGEMENT_BROKER": "kafka://b1:9092;kafka://b2:9092",
        "ENGAGEMENT_TOPIC_EVENTS": "acme.events",
        "ENGAGEMENT_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "ENGAGEMENT_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "ENGAGEMENT_KAFKA_SASL_USERNAME": "producer",
        "ENGAGEMENT_KAFKA_SASL_PASSWORD": "s3cret",
    }
    args = producer.parser_for(env).parse_args(["--sample-users", "1"])
    assert args.topic == "acme.events"
    got = options([], env)
    assert got["bootstrap_servers"] == "b1:9092,b2:9092"
    assert got["security_protocol"] == "SASL_SSL"
    assert isinstance(got["ssl_context"], ssl.SSLContext)
    assert (got["sasl_mechanism"], got["sasl_plain_username"], got["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "producer",
        "s3cret",
    )


def test_flags_override_the_environment() -> None:
    env = {"ENGAGEMENT_BROKER": "kafka://b1:9092"}
    got = options(["--broker", "other:9093", "--security-protocol", "plaintext"], env)
    assert got == {"bootstrap_servers": "other:9093", "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("env", "needed"),
    [
        ({"ENGAGEMENT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "--sasl-mechanism"),
        (
            {
                "ENGAGEMENT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "ENGAGEMENT_KAFKA_SASL_MECHANISM": "PLAIN",
                "ENGAGEMENT_KAFKA_SASL_USERNAME": "producer",
            },
            "ENGAGEMENT_KAFKA_SASL_PASSWORD",
        ),
    ],
)
def test_sasl_without_its_parts_is_refused(env: dict[str, str], needed: str) -> None:
    with pytest.raises(SystemExit, match=needed):
        options([], env)


def test_an_unknown_protocol_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        options(["--security-protocol", "TLS"], {})
    assert "invalid choice" in capsys.readouterr().err


SASL = {
    "ENGAGEMENT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "ENGAGEMENT_KAFKA_SASL_MECHANISM": "PLAIN",
    "ENGAGEMENT_KAFKA_SASL_USERNAME": "producer",
}


def test_the_password_may_come_from_a_file_as_for_the_worker(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    env = {**SASL, "ENGAGEMENT_KAFKA_SASL_PASSWORD_FILE": str(secret)}
    assert options([], env)["sasl_plain_password"] == "s3cret"
    # the worker reads the same variables to the same password
    worker = load_settings(**env)
    assert worker.kafka_sasl_password is not None
    assert worker.kafka_sasl_password.get_secret_value() == "s3cret"


def test_a_password_file_that_cannot_be_read_or_given_twice_is_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent")
    with pytest.raises(SystemExit, match="PASSWORD_FILE: cannot read") as raised:
        options([], {**SASL, "ENGAGEMENT_KAFKA_SASL_PASSWORD_FILE": missing})
    assert missing in str(raised.value)
    secret = tmp_path / "password"
    secret.write_text("s3cret")
    twice = {
        **SASL,
        "ENGAGEMENT_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "ENGAGEMENT_KAFKA_SASL_PASSWORD": "other",
    }
    with pytest.raises(SystemExit, match="one way only") as raised:
        options([], twice)
    assert "s3cret" not in str(raised.value) and "other" not in str(raised.value)


def test_the_password_has_no_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        options(["--sasl-password", "s3cret"], {})
    assert "unrecognized arguments" in capsys.readouterr().err


def test_key_partitions_are_the_engines_and_stay_right_past_the_memory_bound() -> None:
    partition_of = producer.KeyPartitions(7)
    partition_of.MAX_KEYS = 50
    keys = [f"user-{n}".encode() for n in range(120)] + ["ünï-ß".encode(), b""]
    for _round in range(2):
        assert [partition_of(key) for key in keys] == [partition_for(key, 7) for key in keys]


def test_event_ids_are_the_lines_own_else_the_reference_else_the_content() -> None:
    base = {"user_id": "u1", "type": "login", "ts": 1_700_000_000_000}
    assert producer.event_id({**base, "event_id": "e-1", "ref": "r-1"}) == "e-1"
    assert producer.event_id({**base, "ref": "r-1"}) == "r-1"
    by_content = producer.event_id(base)
    assert by_content == producer.event_id(dict(reversed(base.items())))
    assert by_content != producer.event_id({**base, "type": "logout"})
