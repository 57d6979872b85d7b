"""When the Redis mirror writes a user: once per window, at once on a stage or tier change.

The mirror (``agents.worker.redis_mirror``) keeps the newest state of every
changed user in its backlog. This module decides which of them its writer
task sends:

- a user whose stored stage or tier differs from the pair last noted for
  them (or who is not remembered: a bounded number are) is *urgent*: written
  at once, in a batch of the urgent users only (after ``FLUSH_LINGER_S`` when
  the batch was partial, so a stream of new users does not cost one round
  trip each);
- every other change waits for the next *pass*: every ``window_s`` the users
  pending at that moment are written, newest state each, so a user who keeps
  sending events is written at most once per window (plus at each stage or
  tier change). A pass starts early when the backlog reaches half its bound,
  so a window never makes the mirror drop its backlog.

So a field other than stage and tier is at most ``window_s`` plus one pass
behind the table; stage and tier at most the linger plus one round trip
(docs/OPERATIONS.md lists the bound of each field).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import islice
from typing import Final, TypeVar

from tables.state import UserState

T = TypeVar("T")

FLUSH_LINGER_S: Final = 0.2  # after a partial batch of urgent users, let more gather
REMEMBERED_USERS: Final = 200_000  # users whose last (stage, tier) is kept


def serving_code(state: UserState) -> int:
    """The pair a consumer must see at once: stored stage and tier, as one int."""
    return state.stage << 2 | state.tier


class MirrorWindow:
    """The mirror's write schedule (see the module docstring)."""

    def __init__(
        self,
        window_s: float,
        max_backlog: int,
        *,
        remembered_users: int = REMEMBERED_USERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self._start_at = max(1, max_backlog // 2)
        self._remembered_users = remembered_users
        self._clock = clock
        self._codes: dict[str, int] = {}
        self.urgent: dict[str, None] = {}  # an ordered set
        self._pass_left = 0
        self._window_start = clock()

    def note(self, user_id: str, state: UserState | None) -> bool:
        """A change observed; True if it is urgent (a deletion always is)."""
        code = -1 if state is None else serving_code(state)
        codes = self._codes
        if codes.get(user_id) == code:
            return False
        if user_id not in codes and len(codes) >= self._remembered_users:
            del codes[next(iter(codes))]  # the longest remembered
        codes[user_id] = code
        self.urgent[user_id] = None
        return True

    def in_pass(self, pending: int) -> bool:
        """Whether the writer takes every pending user now (a pass runs or is due)."""
        if self._pass_left > 0:
            return True
        now = self._clock()
        if pending and (now - self._window_start >= self.window_s or pending >= self._start_at):
            self._pass_left = pending
            self._window_start = now
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until the next pass is due."""
        return max(0.0, self.window_s - (self._clock() - self._window_start))

    def choose(self, pending: dict[str, T], batch: int, everything: bool) -> list[tuple[str, T]]:
        """Take the next batch out of ``pending``: the oldest in a pass, else urgent users."""
        urgent = self.urgent
        if everything:  # a pass, or a caller that writes everything (drain)
            users = list(islice(pending, min(batch, self._pass_left or batch)))
            self._pass_left = max(0, self._pass_left - len(users))
        else:
            users = [user for user in islice(urgent, batch) if user in pending]
            for user in list(islice(urgent, batch)):
                del urgent[user]
        taken = []
        for user in users:
            taken.append((user, pending.pop(user)))
            urgent.pop(user, None)
        if not pending:
            self._pass_left = 0
            urgent.clear()
        return taken
