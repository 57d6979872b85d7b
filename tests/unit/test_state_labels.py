"""Tenant and segment as the state keeps them (docs/CONTRACTS.md, Input event:
"The state keeps at most 255 bytes of each"), in the state and in every record.

Fails today: the model keeps the whole label in the state it returns and in
the records it makes from that state (the ``new`` transition, and whatever a
record judges before the state is packed), while the packed state, and so
every later record of the user, keeps 255 bytes. Replay (states never
packed) and the live worker then disagree, and one user shows two tenants.
"""

from __future__ import annotations

from tables.model import ModelConfig, ModelEvent, step_event
from tables.state import pack_state, unpack_state
from tables.thresholds import ThresholdPolicy

DAY_MS = 86_400_000
T0_MS = 1_800_000_000_000
CONFIG = ModelConfig(
    policy=ThresholdPolicy(
        defaults_ms=(7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS), min_ms=DAY_MS, max_ms=90 * DAY_MS
    ),
    lateness_ms=600_000,
    day_ms=DAY_MS,
    horizon_ms=30 * DAY_MS,
)
LONG = "ü" * 130  # 260 bytes of UTF-8


def test_a_long_tenant_is_kept_alike_in_the_state_and_in_the_first_record() -> None:
    event = ModelEvent(
        user_id="u1", id_hash=1, type="view", ts_ms=T0_MS, append_ms=T0_MS, tenant=LONG
    )
    step = step_event(None, event, CONFIG)
    kept = unpack_state(pack_state(step.state)).tenant
    assert len(kept.encode()) <= 255
    assert step.state.tenant == kept
    assert [t.tenant for t in step.transitions] == [kept]
