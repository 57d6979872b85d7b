"""Deterministic treatment / hold-out assignment by a salted hash."""

from __future__ import annotations

import struct
from hashlib import sha256
from typing import Final

HOLDOUT = "holdout"
TREATMENT = "treatment"
_FIRST_8_BYTES: Final = struct.Struct(">Q").unpack_from  # big-endian, as int.from_bytes(.., "big")


def group_of(user_id: str, salt: str, holdout_share: float) -> str:
    """``holdout`` for about ``holdout_share`` of users: the first 8 bytes of
    SHA-256(salt + user id), big-endian, as a fraction of 2**64 (stable across
    versions: a user never changes group)."""
    (first,) = _FIRST_8_BYTES(sha256((salt + user_id).encode()).digest())
    return HOLDOUT if first / 2**64 < holdout_share else TREATMENT
