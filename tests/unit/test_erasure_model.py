"""The erasure ledger: salted hashes only, a window on the partition clock, lazy expiry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tables.erasure import (
    HASH_HEX_CHARS,
    DictSuppressionStore,
    ErasureLedger,
    erase_is_current,
    erased_hash,
    pack_until,
    parse_suppression_key,
    suppression_key,
    unpack_until,
    window_start_ms,
)

SALT = b"pepper"
WINDOW_MS = 30_000
T0 = 1_700_000_000_000


def ledger(partition: int = 3, store: DictSuppressionStore | None = None) -> ErasureLedger:
    return ErasureLedger(partition, SALT, WINDOW_MS, store or DictSuppressionStore())


def test_the_store_keeps_only_a_salted_hash_with_the_partition_prefix() -> None:
    store = DictSuppressionStore()
    book = ledger(3, store)
    book.erase("alice@example.com", T0)
    ((key, until_ms),) = store.entries.items()
    assert "alice" not in key and "example" not in key
    assert key == f"3:{erased_hash(SALT, 'alice@example.com')}"
    assert until_ms == T0 + WINDOW_MS


def test_the_hash_depends_on_the_salt() -> None:
    assert erased_hash(b"a", "u1") != erased_hash(b"b", "u1")
    assert erased_hash(b"a", "u1") == erased_hash(b"a", "u1")
    assert len(erased_hash(b"a", "u1")) == HASH_HEX_CHARS


def test_events_are_dropped_within_the_window_and_pass_after_it() -> None:
    store = DictSuppressionStore()
    book = ledger(store=store)
    book.erase("bob", T0)
    assert book.suppresses("bob", T0)
    assert book.suppresses("bob", T0 + WINDOW_MS - 1)
    assert not book.suppresses("carol", T0 + 1)
    # the clock passes the window: the entry expires lazily, the user starts as new
    assert not book.suppresses("bob", T0 + WINDOW_MS)
    assert store.entries == {}
    assert not book


def test_expire_removes_only_passed_windows() -> None:
    store = DictSuppressionStore()
    book = ledger(store=store)
    book.erase("u1", T0)
    book.erase("u2", T0 + 10_000)
    assert book.expire(T0 + WINDOW_MS) == 1
    assert len(book) == 1 and list(store.entries.values()) == [T0 + 10_000 + WINDOW_MS]
    assert book.suppresses("u2", T0 + WINDOW_MS)


def test_a_second_erasure_extends_never_shortens_the_window() -> None:
    book = ledger()
    assert book.erase("u1", T0 + 5_000) == T0 + 5_000 + WINDOW_MS
    assert book.erase("u1", T0) == T0 + 5_000 + WINDOW_MS


def test_load_restores_the_view_from_the_store() -> None:
    store = DictSuppressionStore()
    ledger(2, store).erase("dave", T0)
    fresh = ledger(2, store)
    assert not fresh.suppresses("dave", T0)  # nothing loaded yet
    fresh.load(
        (parsed[1], until)
        for key, until in store.entries.items()
        if (parsed := parse_suppression_key(key)) is not None and parsed[0] == 2
    )
    assert fresh.suppresses("dave", T0 + 1)


def test_stale_requests_are_recognised() -> None:
    assert erase_is_current(T0, T0, 3_600_000)
    assert erase_is_current(T0 - 3_600_000, T0, 3_600_000)
    assert not erase_is_current(T0 - 3_600_001, T0, 3_600_000)


def test_window_starts_at_the_clock_or_at_the_capped_request_time() -> None:
    assert window_start_ms(T0, T0 - 50, T0, 500) == T0
    # a partition whose clock has not started: the request's time minus lateness
    assert window_start_ms(-(2**62), T0, T0 + 10, 500) == T0 - 500
    # a request dated ahead of its append time cannot push the window ahead
    assert window_start_ms(-(2**62), T0 + 10_000, T0, 500) == T0 - 500


@given(st.integers(-(2**63), 2**63 - 1))
def test_until_round_trips(until_ms: int) -> None:
    assert unpack_until(pack_until(until_ms)) == until_ms


def test_foreign_keys_and_blobs_are_ignored() -> None:
    assert parse_suppression_key("x:abc") is None
    assert parse_suppression_key("12") is None
    assert parse_suppression_key(suppression_key(7, "a" * HASH_HEX_CHARS)) == (7, "a" * 32)
    assert unpack_until(b"123") is None
    assert unpack_until(None) is None
