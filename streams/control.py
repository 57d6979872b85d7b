"""Signing and verifying control records (``$tick``, ``$config``, ``$erase``).

``sig`` = HMAC-SHA256 over ``topic|partition|header value|`` followed by the
RFC 8785 canonical JSON of the value without ``sig``. An ordinary producer
without a key cannot forge a far-future tick that would flag every user.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec
import rfc8785

from streams.records import CONTROL_HEADER, ConfigUpdate, ControlRecord, Erase, Tick
from streams.settings import Settings
from tables.errors import ConfigurationError

HEADER_VALUES: dict[type, str] = {Tick: "tick", Erase: "erase", ConfigUpdate: "config"}
_control_decoder = msgspec.json.Decoder(ControlRecord)


def _message(topic: str, partition: int, header_value: str, value: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in value.items() if k != "sig"}
    prefix = f"{topic}|{partition}|{header_value}|".encode()
    return prefix + rfc8785.dumps(unsigned)


class ControlSigner:
    """Signs with one kid, verifies with every kid it knows."""

    def __init__(self, keys: dict[str, bytes], signing_kid: str) -> None:
        if signing_kid not in keys:
            raise ConfigurationError(f"signing kid {signing_kid!r} has no key")
        self._keys = dict(keys)
        self._kid = signing_kid

    def sign(
        self, topic: str, partition: int, record: ControlRecord
    ) -> tuple[bytes, list[tuple[str, bytes]]]:
        """The value bytes and headers of a signed control record for ``topic[partition]``."""
        header_value = HEADER_VALUES[type(record)]
        value = msgspec.to_builtins(msgspec.structs.replace(record, kid=self._kid, sig=""))
        digest = hmac.new(
            self._keys[self._kid], _message(topic, partition, header_value, value), hashlib.sha256
        ).hexdigest()
        value["sig"] = digest
        return msgspec.json.encode(value), [(CONTROL_HEADER, header_value.encode())]

    def verify(
        self, topic: str, partition: int, header_value: str, value: dict[str, Any]
    ) -> ControlRecord | None:
        """The record if its signature holds for this topic-partition, else ``None``."""
        kid = value.get("kid")
        sig = value.get("sig")
        if not isinstance(kid, str) or not isinstance(sig, str) or kid not in self._keys:
            return None
        if len(sig) != 64 or not sig.isascii():
            return None
        try:
            record = _control_decoder.decode(msgspec.json.encode(value))
        except (msgspec.DecodeError, TypeError):
            return None
        if HEADER_VALUES[type(record)] != header_value:
            return None
        try:
            message = _message(topic, partition, header_value, value)
        except (TypeError, ValueError, rfc8785.CanonicalizationError):
            return None
        expected = hmac.new(self._keys[kid], message, hashlib.sha256).hexdigest()
        return record if hmac.compare_digest(expected, sig) else None


def signer_for(settings: Settings) -> ControlSigner | None:
    keys = settings.clock_key_map()
    return ControlSigner(keys, settings.signing_kid) if keys else None
