"""Which inactivity thresholds apply to a user, and where they came from.

Order (docs/CONTRACTS.md): the user's own cadence once there is enough history,
then per segment, per tenant (versions from the config topic), then the
cadence of the user's population (per segment, then per tenant), then the
global defaults.

- **Per user**: a user with at least ``user_min_active_days`` active days
  and a usual gap ``g`` between active days (EWMA, in the state) gets tiers
  ``g * user_gap_multiples``, clamped to ``min_ms..max_ms``. The multiples
  3/6/12 are where a user who kept an exponential rhythm of mean ``g`` would
  stay that quiet with probability about 5 %, 0.25 % and 6·10⁻⁶: a daily
  user is at risk after three silent days, a weekly shopper after three weeks.
- **Per tenant / segment**: ``ThresholdBook`` holds, for one partition, the
  versions received as ``$config`` records in log order. Per scope the
  version with the greatest ``effective_from`` received so far wins (an older
  or re-sent one changes nothing) and applies from ``max(effective_from,
  clock on arrival)``, so a replay of the same log decides the same.
- **Population cadence**: a user without their own cadence yet gets the
  tiers of the usual gap of their population (``population``: centidays
  keyed ``tenant/segment`` or ``tenant``, learned by ``engagement fit``,
  ``tables.population``), by the same multiples and clamp as their own.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

import msgspec

from tables.activity import ActivityTypes
from tables.state import UserState

SOURCE_DEFAULT: Final = "default"
SOURCE_TENANT: Final = "tenant"
SOURCE_SEGMENT: Final = "segment"
SOURCE_USER: Final = "user"
SOURCE_POPULATION: Final = "population"
USER_GAP_MULTIPLES: Final = (3.0, 6.0, 12.0)

Tiers = tuple[int, int, int]


class ThresholdPolicy(msgspec.Struct, frozen=True):
    """Tier thresholds in ms: defaults plus overrides keyed ``tenant`` or ``tenant/segment``.

    ``user_min_active_days`` 0 turns the per-user thresholds off; ``population``
    (usual gaps in centidays per ``tenant/segment`` or ``tenant``) stands in for
    the defaults of a user without their own.
    """

    defaults_ms: Tiers
    min_ms: int
    max_ms: int
    overrides: dict[str, Tiers] = msgspec.field(default_factory=dict)
    user_min_active_days: int = 0
    user_gap_multiples: tuple[float, float, float] = USER_GAP_MULTIPLES
    day_ms: int = 86_400_000
    population: dict[str, int] = msgspec.field(default_factory=dict)

    def resolve(self, state: UserState) -> tuple[Tiers, str]:
        if (
            self.user_min_active_days
            and state.active_days >= self.user_min_active_days
            and state.usual_gap_centidays > 0
        ):
            return self.user_tiers(state.usual_gap_centidays), SOURCE_USER
        if self.overrides:
            if state.segment:
                tiers = self.overrides.get(f"{state.tenant}/{state.segment}")
                if tiers is not None:
                    return tiers, SOURCE_SEGMENT
            tiers = self.overrides.get(state.tenant)
            if tiers is not None:
                return tiers, SOURCE_TENANT
        if self.population:
            gap = self.population_gap(state.tenant, state.segment)
            if gap:
                return self.user_tiers(gap), SOURCE_POPULATION
        return self.defaults_ms, SOURCE_DEFAULT

    def population_gap(self, tenant: str, segment: str) -> int:
        """The usual gap (centidays) of a user's population, 0 when none is known."""
        population = self.population
        if segment:
            gap = population.get(f"{tenant}/{segment}")
            if gap:
                return gap
        return population.get(tenant, 0)

    def user_tiers(self, usual_gap_centidays: int) -> Tiers:
        return _user_tiers(
            usual_gap_centidays, self.day_ms, self.min_ms, self.max_ms, self.user_gap_multiples
        )


@lru_cache(maxsize=8192)
def _user_tiers(
    usual_gap_centidays: int,
    day_ms: int,
    min_ms: int,
    max_ms: int,
    multiples: tuple[float, float, float],
) -> Tiers:
    """Tiers from a usual gap (memoised: the gap is a u16, asked per event and per judgement)."""
    gap_ms = usual_gap_centidays * day_ms / 100
    at_risk, dormant, churned = (
        min(max_ms, max(min_ms, round(gap_ms * multiple))) for multiple in multiples
    )
    return (at_risk, max(at_risk, dormant), max(at_risk, dormant, churned))


class ThresholdVersion(msgspec.Struct, frozen=True, array_like=True):
    """One received version of a scope's thresholds."""

    effective_from_ms: int
    applies_from_ms: int
    tiers_ms: Tiers
    activity: ActivityTypes | None = None  # the scope's activity classes, if it gives them


class ThresholdBook(msgspec.Struct, frozen=True):
    """The config versions one partition has received, per scope, oldest first."""

    scopes: dict[str, tuple[ThresholdVersion, ...]] = msgspec.field(default_factory=dict)

    def receive(
        self,
        scope: str,
        effective_from_ms: int,
        tiers_ms: Tiers,
        clock_ms: int,
        activity: ActivityTypes | None = None,
    ) -> ThresholdBook | None:
        """The book with this version added, or ``None`` when it changes nothing."""
        versions = self.scopes.get(scope, ())
        if versions and effective_from_ms <= versions[-1].effective_from_ms:
            return None
        version = ThresholdVersion(
            effective_from_ms=effective_from_ms,
            applies_from_ms=max(effective_from_ms, clock_ms),
            tiers_ms=tiers_ms,
            activity=activity,
        )
        return ThresholdBook({**self.scopes, scope: (*versions, version)})

    def overrides_at(self, clock_ms: int) -> dict[str, Tiers]:
        """The tiers in force per scope at ``clock_ms``."""
        out: dict[str, Tiers] = {}
        for scope, versions in self.scopes.items():
            for version in reversed(versions):
                if version.applies_from_ms <= clock_ms:
                    out[scope] = version.tiers_ms
                    break
        return out

    def activity_at(self, clock_ms: int) -> dict[str, ActivityTypes]:
        """The activity classes in force per scope at ``clock_ms`` (scopes whose
        version in force gives them)."""
        out: dict[str, ActivityTypes] = {}
        for scope, versions in self.scopes.items():
            for version in reversed(versions):
                if version.applies_from_ms <= clock_ms:
                    if version.activity is not None:
                        out[scope] = version.activity
                    break
        return out

    def next_activation_ms(self, after_ms: int) -> int | None:
        """The earliest instant after ``after_ms`` at which a version starts to apply."""
        later = [
            version.applies_from_ms
            for versions in self.scopes.values()
            for version in versions
            if version.applies_from_ms > after_ms
        ]
        return min(later, default=None)

    def pruned(self, clock_ms: int) -> ThresholdBook:
        """Without versions superseded before ``clock_ms`` (keeps the book small)."""
        scopes: dict[str, tuple[ThresholdVersion, ...]] = {}
        for scope, versions in self.scopes.items():
            keep = len(versions) - 1
            while keep > 0 and versions[keep].applies_from_ms > clock_ms:
                keep -= 1
            scopes[scope] = versions[keep:]
        return ThresholdBook(scopes)

    def tenants(self) -> set[str]:
        return {scope.split("/", 1)[0] for scope in self.scopes}


_book_encoder = msgspec.json.Encoder()
_book_decoder = msgspec.json.Decoder(ThresholdBook)


def encode_book(book: ThresholdBook) -> bytes:
    return _book_encoder.encode(book)


def decode_book(blob: bytes | None) -> ThresholdBook:
    return ThresholdBook() if not blob else _book_decoder.decode(blob)
