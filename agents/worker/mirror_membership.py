"""Which at-risk sets the Redis mirror has left each user in.

``MirrorMembership`` holds every user the mirror may have left in an at-risk
set, with those sets (a superset); it is exact for the users of the
partitions a resync has rewritten since their last resync request, so a user
there who is not in it needs no ZREM. Every resync request forgets that
knowledge for its partitions, since another worker or a restarted Redis may
have changed the sets meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class MirrorMembership:
    """The at-risk sets each user may be in, as the mirror wrote them."""

    def __init__(self) -> None:
        self._members: dict[str, set[bytes]] = {}
        self._known: set[int] = set()
        self._known_all = False

    def sets_of(self, user_id: str) -> Iterable[bytes]:
        """The sets the mirror may have left ``user_id`` in."""
        return self._members.get(user_id, ())

    def forget(self, partitions: Iterable[int] | None) -> None:
        """Membership of ``partitions`` (``None``: all) is no longer known exactly:
        another worker may have written their users meanwhile, or Redis lost them."""
        self._known_all = False
        if partitions is None:
            self._known.clear()
        else:
            self._known.difference_update(partitions)

    def unknown(self, partition: int) -> bool:
        """Whether the partition's users may be in sets this mirror does not know of."""
        return not (self._known_all or partition in self._known)

    def may_be_in(self, user_id: str, target: bytes | None) -> None:
        """Before a write: the user may be in ``target`` too (a superset stays one)."""
        if target is not None:
            self._members.setdefault(user_id, set()).add(target)

    def is_in(self, user_id: str, target: bytes | None) -> None:
        """After a write: the user is in ``target`` only."""
        if target is None:
            self._members.pop(user_id, None)
        else:
            self._members[user_id] = {target}

    def learn(
        self,
        partitions: set[int] | None,
        owned: set[int] | None,
        partition_of: Callable[[str], int],
    ) -> None:
        """After a resync of ``partitions``: their users' membership is as written;
        users of partitions not ``owned`` are forgotten (their owner writes them now)."""
        if partitions is None:
            self._known_all = True
        else:
            self._known |= partitions
        if owned is not None:
            self._members = {
                user_id: sets
                for user_id, sets in self._members.items()
                if partition_of(user_id) in owned
            }
