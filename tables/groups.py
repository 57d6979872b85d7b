"""Deterministic treatment / hold-out assignment by a salted hash, and experiment arms.

With an experiment (``ENGAGEMENT_EXPERIMENT_ID``), a signal's *arm* is the
first of the configured reason codes (``ENGAGEMENT_EXPERIMENT_REASONS``, in
their order) among the signal's reason codes, else ``other``; each arm draws
its own hold-out with the salt ``{holdout salt}:{experiment id}:{arm}``, so
each action is measured against a hold-out of its own.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from functools import lru_cache
from hashlib import sha256
from typing import Final

HOLDOUT = "holdout"
OTHER_ARM = "other"
TREATMENT = "treatment"
GROUPS_CACHED: Final = 65_536  # recent users' groups (a SHA-256 each; asked per transition)
_FIRST_8_BYTES: Final = struct.Struct(">Q").unpack_from  # big-endian, as int.from_bytes(.., "big")


@lru_cache(maxsize=GROUPS_CACHED)
def group_of(user_id: str, salt: str, holdout_share: float) -> str:
    """``holdout`` for about ``holdout_share`` of users: the first 8 bytes of
    SHA-256(salt + user id), big-endian, as a fraction of 2**64 (stable across
    versions: a user never changes group)."""
    (first,) = _FIRST_8_BYTES(sha256((salt + user_id).encode()).digest())
    return HOLDOUT if first / 2**64 < holdout_share else TREATMENT


def arm_of(codes: Iterable[str], arms: tuple[str, ...]) -> str:
    """The experiment arm of a signal with reason ``codes``."""
    present = set(codes)
    return next((arm for arm in arms if arm in present), OTHER_ARM)


def arm_group(user_id: str, salt: str, experiment_id: str, arm: str, holdout_share: float) -> str:
    """The user's group within one arm of an experiment."""
    return group_of(user_id, f"{salt}:{experiment_id}:{arm}", holdout_share)
