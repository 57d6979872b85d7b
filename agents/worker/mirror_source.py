"""What the Redis mirror reads from the worker: ownership, the users table, the
clock (``MirrorSource``), and its implementation over the worker's table."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from agents.worker.user_view import UserFields, mirror_fields
from streams.decode import partition_for
from tables.errors import StateFormatError
from tables.model import ModelConfig
from tables.state import UserState

log = logging.getLogger(__name__)


class MirrorSource(Protocol):
    """What the mirror reads from the worker: ownership, the table, the clock."""

    def owned(self) -> set[int] | None:
        """Input partitions this worker owns now (``None``: all of them)."""

    def partition_of(self, user_id: str) -> int: ...

    def user_ids(self, partitions: set[int] | None) -> list[str]:
        """A snapshot of the users stored for ``partitions`` (``None``: all)."""

    def get(self, user_id: str) -> UserState | None: ...

    def fields(self, user_id: str, state: UserState) -> UserFields: ...


class StateReader(Protocol):
    def get(self, user_id: str) -> UserState | None: ...


class TableSource:
    """``MirrorSource`` over the worker's users table (UTF-8 keys, packed states).

    States are read through ``store`` (the runtime's ``TableStore``), keys
    are listed from ``table``.
    """

    def __init__(
        self,
        store: StateReader,
        table: Any,
        partitions: int,
        config: ModelConfig,
        clock_of: Callable[[int], int],
        owned: Callable[[], set[int]] | None = None,
    ) -> None:
        self._store = store
        self._table = table
        self._partitions = partitions
        self._config = config
        self._clock_of = clock_of
        self._owned = owned

    def owned(self) -> set[int] | None:
        return None if self._owned is None else self._owned()

    def partition_of(self, user_id: str) -> int:
        return partition_for(user_id.encode(), self._partitions)

    def user_ids(self, partitions: set[int] | None) -> list[str]:
        # A snapshot of the keys: the agent keeps writing while the mirror reads.
        keys: list[bytes] = list(self._table.keys())
        n = self._partitions
        return [
            key.decode()
            for key in keys
            if partitions is None or partition_for(key, n) in partitions
        ]

    def get(self, user_id: str) -> UserState | None:
        try:
            return self._store.get(user_id)
        except StateFormatError:
            log.error("redis mirror: a user state of an unknown format is not mirrored")
            return None

    def fields(self, user_id: str, state: UserState) -> UserFields:
        clock = self._clock_of(self.partition_of(user_id))
        return mirror_fields(user_id, state, clock, self._config)
