"""The memory soak at a small size: its accounting holds on both stores.

Outcomes only: every user sent is tracked, applied once and in the
changelog; the memory figures come back. Never a timing or a memory bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.bench.flood import flood

USERS = 3_000


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_every_flooded_user_is_tracked_applied_and_stored_once(
    kafka_broker: Any, tmp_path: Path, store: str
) -> None:
    result = await flood(kafka_broker.url, kafka_broker.bootstrap, USERS, store, tmp_path)
    assert result.store == store
    assert result.users_tracked == result.users_sent == USERS
    assert result.events_applied == USERS
    assert result.dlq_records == 0
    assert result.changelog_users == USERS
    assert 0 < result.state_bytes_per_user <= result.state_bytes_max
    assert result.rss_before_bytes > 0
    assert result.peak_rss_bytes >= result.rss_after_bytes > 0
    assert result.peak_rss_bytes >= result.rss_halfway_bytes > 0
    assert result.rss_bytes_per_user == round(
        (result.rss_after_bytes - result.rss_before_bytes) / USERS, 1
    )
