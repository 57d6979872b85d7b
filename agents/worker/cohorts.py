"""Live cohort retention: counts per partition, kept in the clocks table, published
to the compacted cohorts topic, exported as bounded gauges.

Each applied event's cohort step (``tables.cohorts.cohort_step``) adds one to
its cell. A cell's counts live in the clocks table under
``"{P}:cohort:" + JSON [tenant, segment, group, cohort, period]`` (8 bytes:
active and retained, big-endian u32), written while the event is processed,
so they land in changelog partition P with the user's state and recover with
it. Cells changed since the last publication are sent on the partition's
next tick to the cohorts topic (compacted; one record per cell and
partition, ``streams.records.CohortCount``): a reader sums the partitions. A
partition gained (start, rebalance, crash) republishes all its cells, so a
lost publication is repaired by the next owner.

Gauges (docs/OPERATIONS.md), on ticks, for the last ``cohort_metric_periods``
cohorts only, labels bounded: ``tenant`` (config-topic tenants, else
``other``), ``group``, ``cohort`` (periods since the cohort began,
``0..N-1``), ``age`` (periods since the cohort began of the counted period),
``partition``; no segment label.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgspec
from prometheus_client import Gauge

from agents.worker.metrics import Metrics
from agents.worker.stickiness import OTHER_TENANT
from streams.records import CohortCount
from tables.cohorts import Cell, CellCounts, cell_of, cohort_step, count_step
from tables.groups import group_of
from tables.model import ModelConfig
from tables.state import UserState

GROWTH_KINDS: Final = ("new", "retained", "resurrected", "churned")
log = logging.getLogger(__name__)
_cell_key = msgspec.json.Encoder()
_key_decoder = msgspec.json.Decoder(tuple[str, str, str, int, int])


def key_prefix(partition: int) -> bytes:
    return f"{partition}:cohort:".encode()


def cell_key(partition: int, cell: Cell) -> bytes:
    """The clocks-table key of a partition's cell."""
    return key_prefix(partition) + _cell_key.encode(
        (cell.tenant, cell.segment, cell.group, cell.cohort, cell.period)
    )


def pack_counts(counts: CellCounts) -> bytes:
    return counts.active.to_bytes(4, "big") + counts.retained.to_bytes(4, "big")


def unpack_counts(blob: bytes) -> CellCounts:
    if len(blob) != 8:
        raise ValueError(f"cohort counts of {len(blob)} bytes (8 expected)")
    return CellCounts(int.from_bytes(blob[:4], "big"), int.from_bytes(blob[4:], "big"))


def cell_of_key(key: bytes, partition: int) -> Cell | None:
    prefix = key_prefix(partition)
    if not key.startswith(prefix):
        return None
    return Cell(*_key_decoder.decode(key[len(prefix) :]))


def cohort_record(cell: Cell, counts: CellCounts, partition: int, period_ms: int) -> CohortCount:
    return CohortCount(
        tenant=cell.tenant,
        segment=cell.segment,
        group=cell.group,
        period_ms=period_ms,
        cohort_start=cell.cohort * period_ms,
        period_start=cell.period * period_ms,
        partition=partition,
        active=counts.active,
        retained=counts.retained,
    )


def record_key(record: CohortCount) -> bytes:
    """The compacted topic's key: the cell and the partition (each partition its own)."""
    return _cell_key.encode(
        [
            record.tenant,
            record.segment,
            record.group,
            record.cohort_start,
            record.period_start,
            record.partition,
        ]
    )


class CohortGauges:
    """``engagement_cohort_users`` and ``engagement_growth_users`` (see the module docstring)."""

    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.users = Gauge(
            "engagement_cohort_users",
            "Users of a recent cohort active in a period (cohort and age in periods)",
            ["tenant", "group", "cohort", "age", "partition"],
            registry=registry,
        )
        self.growth = Gauge(
            "engagement_growth_users",
            "Growth accounting of the current (0) and previous (1) period",
            ["tenant", "group", "kind", "period", "partition"],
            registry=registry,
        )
        # series of a partition given away go with the others (Metrics.drop_partitions)
        metrics.per_partition += (self.users, self.growth)


class LiveCohorts:
    """The cohort cells of a worker's partitions (recent ones in memory)."""

    def __init__(
        self,
        config: ModelConfig,
        period_ms: int,
        metric_periods: int,
        gauges: CohortGauges,
        tenants: Callable[[], set[str]],
    ) -> None:
        self._config = config
        self.period_ms = period_ms
        self.metric_periods = metric_periods
        self._gauges = gauges
        self._tenants = tenants
        # per partition: cells of recent cohorts (gauges) and cells not yet published
        self._recent: dict[int, dict[Cell, CellCounts]] = {}
        self._dirty: dict[int, dict[Cell, CellCounts]] = {}
        self._labels: dict[int, set[tuple[str, ...]]] = defaultdict(set)
        # per partition: [active, new, retained] per (tenant, group, period), last 3 periods
        self._totals: dict[int, dict[tuple[str, str, int], list[int]]] = {}

    def on_event(
        self,
        partition: int,
        user_id: str,
        previous: UserState | None,
        state: UserState,
        table: Any,
    ) -> None:
        """An applied event: count its cohort step in ``table`` (the clocks table)."""
        step = cohort_step(previous, state, self.period_ms)
        if step is None:
            return
        config = self._config
        cell = cell_of(step, state, group_of(user_id, config.holdout_salt, config.holdout_share))
        key = cell_key(partition, cell)
        blob = table.get(key)
        cells = {cell: unpack_counts(blob)} if blob is not None else {}
        counts = count_step(cells, cell, step.retained)
        table[key] = pack_counts(counts)
        self._dirty.setdefault(partition, {})[cell] = counts
        if cell.cohort > self._oldest_shown(cell.period):
            self._recent.setdefault(partition, {})[cell] = counts
        row = self._totals.setdefault(partition, {}).setdefault(
            (cell.tenant, cell.group, cell.period), [0, 0, 0]
        )
        row[0] += 1
        row[1] += cell.cohort == cell.period
        row[2] += step.retained

    def _oldest_shown(self, current: int) -> int:
        """Cohorts after this period number are shown as gauges."""
        return current - self.metric_periods

    def load(self, partition: int, items: Iterable[tuple[bytes, bytes]], today_ms: int) -> int:
        """A gained partition: its cells from the clocks table, all to be published again."""
        cells: dict[Cell, CellCounts] = {}
        unreadable = 0
        for key, blob in items:
            try:
                cell = cell_of_key(key, partition)
                if cell is not None and blob is not None:
                    cells[cell] = unpack_counts(blob)
            except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
                unreadable += 1  # a cell lost is a count lost, not a stopped partition
        if unreadable:
            log.error("partition %d: %d cohort cells unreadable, left out", partition, unreadable)
        self._dirty[partition] = dict(cells)
        oldest = self._oldest_shown(today_ms // self.period_ms)
        self._recent[partition] = {c: n for c, n in cells.items() if c.cohort > oldest}
        totals: dict[tuple[str, str, int], list[int]] = {}
        for cell, counts in cells.items():
            if cell.period >= today_ms // self.period_ms - 2:
                row = totals.setdefault((cell.tenant, cell.group, cell.period), [0, 0, 0])
                row[0] += counts.active
                row[1] += counts.active if cell.cohort == cell.period else 0
                row[2] += counts.retained
        self._totals[partition] = totals
        return len(cells)

    def take_records(self, partition: int) -> list[CohortCount]:
        """The cells changed since the last call, as topic records."""
        dirty = self._dirty.pop(partition, None)
        if not dirty:
            return []
        return [
            cohort_record(cell, counts, partition, self.period_ms)
            for cell, counts in sorted(dirty.items())
        ]

    def publish(self, partition: int, today_ms: int) -> None:
        """Set the gauges of a partition as of ``today_ms`` (on ticks)."""
        current = today_ms // self.period_ms
        oldest = self._oldest_shown(current)
        recent = self._recent.get(partition, {})
        for cell in [c for c in recent if c.cohort <= oldest]:
            del recent[cell]  # too old to show: the table still has it
        users: defaultdict[tuple[str, ...], int] = defaultdict(int)
        for cell, counts in recent.items():
            if cell.period <= current:
                tenant = self._tenant_label(cell.tenant)
                age = str(cell.period - cell.cohort)
                users[(tenant, cell.group, str(current - cell.cohort), age)] += counts.active
        totals = self._totals.get(partition, {})
        for key in [k for k in totals if k[2] < current - 2]:
            del totals[key]
        # [active, new, retained] per (tenant label, group, period)
        by_label: defaultdict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0, 0])
        for (tenant, group, period), row in totals.items():
            into = by_label[(self._tenant_label(tenant), group, period)]
            for index, value in enumerate(row):
                into[index] += value
        growth: dict[tuple[str, ...], int] = {}
        for tenant, group in {(t, g) for t, g, _p in by_label}:
            for back in (0, 1):
                active, new, retained = by_label.get((tenant, group, current - back), (0, 0, 0))
                before = by_label.get((tenant, group, current - back - 1), (0, 0, 0))[0]
                values = (new, retained, active - new - retained, before - retained)
                for kind, value in zip(GROWTH_KINDS, values, strict=True):
                    growth[(tenant, group, kind, str(back))] = value
        self._set(partition, users, growth)

    def _tenant_label(self, tenant: str) -> str:
        return tenant if tenant and tenant in self._tenants() else OTHER_TENANT

    def _set(
        self,
        partition: int,
        users: dict[tuple[str, ...], int],
        growth: dict[tuple[str, ...], int],
    ) -> None:
        label = str(partition)
        shown: set[tuple[str, ...]] = set()
        for labels, value in users.items():
            self._gauges.users.labels(*labels, label).set(value)
            shown.add(("users", *labels))
        for labels, value in growth.items():
            self._gauges.growth.labels(*labels, label).set(value)
            shown.add(("growth", *labels))
        for gone in self._labels[partition] - shown:
            self._remove(gone, label)
        self._labels[partition] = shown

    def _remove(self, labels: tuple[str, ...], partition: str) -> None:
        gauge = self._gauges.users if labels[0] == "users" else self._gauges.growth
        with contextlib.suppress(KeyError):  # dropped already with the partition's series
            gauge.remove(*labels[1:], partition)

    def forget(self, partition: int) -> None:
        """A partition given away: no gauges, nothing to publish."""
        self._recent.pop(partition, None)
        self._dirty.pop(partition, None)
        self._totals.pop(partition, None)
        for labels in self._labels.pop(partition, set()):
            self._remove(labels, str(partition))
