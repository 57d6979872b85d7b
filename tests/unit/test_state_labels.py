"""Tenant and segment as the state keeps them (docs/CONTRACTS.md, Input event):
at most ``ENGAGEMENT_MAX_LABEL_BYTES`` (≤ 255) bytes each, refused with a DLQ
reason above that, never cut, so a user never shows two tenants."""

from __future__ import annotations

import pytest

from streams.settings import load_settings
from tables.errors import ConfigurationError, StateFormatError
from tables.state import UserState, pack_state, unpack_state

LONG = "ü" * 130  # 260 bytes of UTF-8


def test_a_label_longer_than_the_state_keeps_is_refused_not_cut() -> None:
    with pytest.raises(StateFormatError, match="260 bytes"):
        pack_state(UserState(first_seen_ms=1, last_seen_ms=1, tenant=LONG))
    with pytest.raises(StateFormatError, match="260 bytes"):
        pack_state(UserState(first_seen_ms=1, last_seen_ms=1, segment=LONG))


def test_a_label_of_255_bytes_round_trips_whole() -> None:
    label = "ü" * 127 + "a"  # 255 bytes
    state = UserState(first_seen_ms=1, last_seen_ms=1, tenant=label, segment=label)
    assert unpack_state(pack_state(state)) == state


def test_the_label_cap_cannot_exceed_what_the_state_keeps() -> None:
    with pytest.raises((ConfigurationError, ValueError)):
        load_settings(max_label_bytes=256)
