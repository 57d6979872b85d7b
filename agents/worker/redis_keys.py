"""The key layout of the Redis serving mirror, and the commands that write and
read one user's keys:

- ``{prefix}:user:{user_id}`` — a hash of the user's serving view
  (``agents.worker.user_view``: stage, tier, risk, last_seen, episode, tenant,
  group, ...); a user id names one user across tenants (docs/CONTRACTS.md);
- ``{prefix}:tenant:{tenant}:at_risk`` — a sorted set of the tenant's
  treatment users whose stage is ``at_risk``, scored by risk, and
  ``{prefix}:tenant:{tenant}:at_risk_holdout`` the same for hold-out users
  (kept apart so that a reader acting on the first never reaches the
  control group). ``{tenant}`` is percent-encoded (no ``:`` inside; empty for
  events without a tenant).

``prefix`` is the app id (``ENGAGEMENT_APP_ID``), so deployments sharing a
Redis never touch each other's keys. Nothing but the user id and the tenant
is in a key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import quote

from redis.asyncio import Redis

from agents.worker.user_view import UserFields, is_at_risk
from tables.groups import HOLDOUT

# A Redis outage shows up as any of these; anything else is a bug and stops the task.
_FIELD_NAMES = {
    name: name.encode()
    for name in (
        "stage",
        "tier",
        "risk",
        "as_of",
        "last_seen",
        "episode",
        "tenant",
        "segment",
        "group",
        "events_total",
    )
}

_SET_KEYS_CACHED = 4096


class MirrorKeys:
    """Key names of the serving API."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.user_prefix = f"{prefix}:user:"
        self.tenant_prefix = f"{prefix}:tenant:"
        self._sets: dict[tuple[str, str], bytes] = {}
        # a counter ``engagement redis-sync`` raises after each rebuild; workers
        # read it with every write and rewrite their partitions when it moves
        self.rebuilds = f"{prefix}:rebuilds"

    def user(self, user_id: str) -> str:
        return self.user_prefix + user_id

    def user_of(self, key: str) -> str | None:
        return key[len(self.user_prefix) :] if key.startswith(self.user_prefix) else None

    @property
    def user_pattern(self) -> str:
        """SCAN pattern of all user hashes (glob characters of the prefix escaped)."""
        return _glob_escaped(self.user_prefix) + "*"

    @property
    def set_pattern(self) -> str:
        """SCAN pattern of every tenant's at-risk sets."""
        return _glob_escaped(self.tenant_prefix) + "*"

    def at_risk(self, tenant: str, group: str) -> str:
        """The at-risk set of ``tenant``'s users of ``group``."""
        return self.at_risk_bytes(tenant, group).decode()

    def at_risk_bytes(self, tenant: str, group: str) -> bytes:
        key = self._sets.get((tenant, group))
        if key is None:
            suffix = "at_risk_holdout" if group == HOLDOUT else "at_risk"
            key = f"{self.tenant_prefix}{quote(tenant, safe='')}:{suffix}".encode()
            if len(self._sets) < _SET_KEYS_CACHED:
                self._sets[(tenant, group)] = key
        return key

    def both_sets(self, tenant: str) -> tuple[bytes, bytes]:
        return (self.at_risk_bytes(tenant, "treatment"), self.at_risk_bytes(tenant, HOLDOUT))


def _glob_escaped(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def set_of(keys: MirrorKeys, fields: UserFields) -> bytes | None:
    """The at-risk set the user belongs in (``None``: not at risk)."""
    if not is_at_risk(fields):
        return None
    return keys.at_risk_bytes(str(fields["tenant"]), str(fields["group"]))


def _encoded(value: str | int | float) -> bytes:
    return value.encode() if isinstance(value, str) else repr(value).encode()


def write_user(
    pipe: Any,
    keys: MirrorKeys,
    user_id: str,
    fields: UserFields,
    *,
    maybe_member: bool = True,
    was_in: Iterable[bytes] = (),
) -> bytes | None:
    """Queue the user's whole hash and their at-risk membership (idempotent);
    returns the at-risk set the user is in (``None``: none).

    ``was_in``: the sets the caller may have left the user in (a ZREM from
    each the user no longer belongs in). ``maybe_member=False``: the caller knows the
    user is in no at-risk set but ``was_in``, so nothing else is removed (half
    the commands); otherwise both sets of the user's tenant are cleared but
    the one the user belongs in (another tenant's set: ``remove_stale``).
    Arguments go as bytes: redis-py's per-argument encoding of str, int and
    float was most of the mirror's cost per user.
    """
    args: list[bytes] = [keys.user(user_id).encode()]
    for name, value in fields.items():
        args.append(_FIELD_NAMES.get(name) or name.encode())
        args.append(_encoded(value))
    pipe.execute_command("HSET", *args)
    target = set_of(keys, fields)
    member = user_id.encode()
    if target is not None:
        pipe.execute_command("ZADD", target, _encoded(fields["risk"]), member)
    leave_sets(pipe, keys, member, fields, target, was_in, maybe_member)
    return target


def leave_sets(
    pipe: Any,
    keys: MirrorKeys,
    member: bytes,
    fields: UserFields,
    target: bytes | None,
    was_in: Iterable[bytes],
    maybe_member: bool,
) -> None:
    """ZREM the user from the sets they may be in but no longer belong in."""
    doomed = set(keys.both_sets(str(fields["tenant"]))) if maybe_member else set()
    doomed.update(was_in)
    if target is not None:
        doomed.discard(target)
    for key in sorted(doomed):
        pipe.execute_command("ZREM", key, member)


def delete_user(pipe: Any, keys: MirrorKeys, user_id: str, was_in: Iterable[bytes] = ()) -> None:
    """Remove the user's hash and their memberships of ``was_in``; a membership
    the caller does not know of is left for ``remove_stale``."""
    pipe.delete(keys.user(user_id))
    for key in sorted(was_in):
        pipe.execute_command("ZREM", key, user_id.encode())


async def top_at_risk(
    client: Redis, keys: MirrorKeys, limit: int, tenant: str = "", include_holdout: bool = False
) -> list[dict[str, Any]]:
    """The ``limit`` users of ``tenant`` most at risk, highest risk first, with their
    hashes; hold-out users only when asked (``include_holdout``)."""
    groups = ["treatment", HOLDOUT] if include_holdout else ["treatment"]
    members: list[tuple[str, float]] = []
    for group in groups:
        members += cast(
            list[tuple[str, float]],
            await client.zrevrange(keys.at_risk(tenant, group), 0, limit - 1, withscores=True),
        )
    members = sorted(members, key=lambda item: (-item[1], str(item[0])))[:limit]
    if not members:
        return []
    pipe = client.pipeline(transaction=False)
    for member, _score in members:
        pipe.hgetall(keys.user(str(member)))
    hashes = await pipe.execute()
    return [
        {**dict(fields), "user_id": str(member), "risk": float(score)}
        for (member, score), fields in zip(members, hashes, strict=True)
        if fields and fields.get("tenant", "") == tenant
    ]
