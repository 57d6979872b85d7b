"""Deterministic treatment / hold-out assignment by a salted hash."""

from __future__ import annotations

import hashlib

HOLDOUT = "holdout"
TREATMENT = "treatment"


def group_of(user_id: str, salt: str, holdout_share: float) -> str:
    digest = hashlib.sha256((salt + user_id).encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return HOLDOUT if position < holdout_share else TREATMENT
