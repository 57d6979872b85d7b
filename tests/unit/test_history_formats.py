"""replay, fit and evaluate read JSON Lines, CSV and Parquet histories alike.

The CSV and Parquet files are written here from the simulator's JSON Lines
history with the csv module and pyarrow, not by the code under test; each
format must give the same scores, signals and counts as the JSON Lines."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from agents.cli.main import main
from agents.offline.backtest import evaluate
from agents.offline.baselines import History
from agents.offline.evaluate import event_times
from agents.offline.fit import fit_history
from agents.offline.history_facts import history_facts
from agents.offline.history_formats import history_lines
from agents.offline.history_lines import read_lines
from agents.offline.replay import replay
from agents.simulation.producer import write_history
from streams.validate import EventRules
from tables.errors import ConfigurationError
from tables.model import ModelConfig
from tables.thresholds import ThresholdPolicy

DAY_MS = 1_000
T0 = 1_750_000_000_000
AS_OF_MS = T0 + 40 * DAY_MS
CONFIG = ModelConfig(
    policy=ThresholdPolicy(
        defaults_ms=(7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS), min_ms=DAY_MS, max_ms=90 * DAY_MS
    ),
    lateness_ms=500,
    day_ms=DAY_MS,
    horizon_ms=30 * DAY_MS,
    holdout_salt="salt",
)
FIELDS = ("event_id", "user_id", "type", "ts", "tenant", "segment", "props")


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "events.jsonl"
    write_history(path, 80, 45, 7, DAY_MS, T0)
    return path


def records(jsonl: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]


def to_csv(jsonl: Path, path: Path) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=FIELDS)
        writer.writeheader()
        for record in records(jsonl):
            cells = {k: record.get(k) for k in FIELDS}
            cells["props"] = None if record.get("props") is None else json.dumps(record["props"])
            writer.writerow({k: "" if v is None else v for k, v in cells.items()})
    return path


def to_parquet(jsonl: Path, path: Path, *, ts_as_timestamp: bool = False) -> Path:
    rows = records(jsonl)
    columns: dict[str, Any] = {k: [row.get(k) for row in rows] for k in FIELDS if k != "props"}
    columns["props"] = [json.dumps(row["props"]) if row.get("props") else None for row in rows]
    table = pa.table(columns)
    if ts_as_timestamp:  # a warehouse export: a UTC timestamp column, not epoch ms
        instants = [datetime.fromtimestamp(ms / 1000, UTC) for ms in columns["ts"]]
        table = table.set_column(
            FIELDS.index("ts"), "ts", pa.array(instants, type=pa.timestamp("ms", tz="UTC"))
        )
    # props as a JSON text column would be refused: an object column instead
    props = [json.loads(text) if text else None for text in columns["props"]]
    table = table.set_column(table.schema.get_field_index("props"), "props", pa.array(props))
    pq.write_table(table, path)
    return path


def replayed(path: Path) -> tuple[str, bytes, Any]:
    scores, signals = io.StringIO(), io.BytesIO()
    stats = replay(path, AS_OF_MS, CONFIG, scores, signals, False)
    return scores.getvalue(), signals.getvalue(), stats


@pytest.mark.parametrize("fmt", ["csv", "parquet", "parquet-timestamps"])
def test_every_format_replays_to_the_same_scores_and_signals(
    jsonl: Path, tmp_path: Path, fmt: str
) -> None:
    if fmt == "csv":
        other = to_csv(jsonl, tmp_path / "events.csv")
    else:
        other = to_parquet(
            jsonl, tmp_path / "events.parquet", ts_as_timestamp=fmt == "parquet-timestamps"
        )
    scores, signals, stats = replayed(jsonl)
    assert stats.events > 1_000 and signals  # the history is not trivial
    assert replayed(other) == (scores, signals, stats)


def test_fit_and_evaluate_read_parquet_as_jsonl(jsonl: Path, tmp_path: Path) -> None:
    parquet = to_parquet(jsonl, tmp_path / "events.parquet")
    cutoff = T0 + 30 * DAY_MS
    assert fit_history(parquet, cutoff, CONFIG).params == fit_history(jsonl, cutoff, CONFIG).params
    rules = EventRules()
    assert list(event_times(parquet, rules)) == list(event_times(jsonl, rules))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_evaluate_and_the_report_history_read_csv_and_parquet_as_jsonl(
    jsonl: Path, tmp_path: Path, fmt: str
) -> None:
    """The backtest's own history reader (its baselines') and the report's cohort
    figures take every format too."""
    if fmt == "csv":
        other = to_csv(jsonl, tmp_path / "events.csv")
    else:
        other = to_parquet(jsonl, tmp_path / "events.parquet")
    cutoffs = [T0 + 30 * DAY_MS]

    def evaluated(path: Path) -> str:
        report, _scored = evaluate(path, cutoffs, 7 * DAY_MS, CONFIG, samples=20)
        return json.dumps(report, sort_keys=True)

    assert History(other).times == History(jsonl).times
    if fmt == "parquet":  # the whole backtest once (CSV reaches it through the same readers)
        expected = evaluated(jsonl)
        assert json.loads(expected)["cutoffs"][0]["users"] > 0
        assert evaluated(other) == expected
    period_ms = 7 * DAY_MS
    assert history_facts(other, CONFIG, period_ms) == history_facts(jsonl, CONFIG, period_ms)


def lines_of(path: Path) -> tuple[list[Any], Counter[str]]:
    rejected: Counter[str] = Counter()
    with history_lines(path) as lines:
        return list(read_lines(lines, EventRules(), rejected)), rejected


def test_bad_csv_rows_get_the_reasons_a_worker_gives(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "event_id,user_id,type,ts,props\n"
        f"e1,ana,visit,{T0},\n"  # good, no props
        'e2,ana,visit,2025-06-15T12:00:00Z,"{""page"": 1}"\n'  # good, RFC 3339 and props
        "e3,ana,visit,yesterday,\n"  # wrong_type
        f"e4,,visit,{T0},\n"  # an empty user_id is absent: missing_field
        f"e5,ana,visit,{T0},[1\n"  # props not an object
        f"e6,ana,visit,{T0 // 1000},\n"  # seconds: ts_out_of_range
    )
    events, rejected = lines_of(path)
    assert [(e.event_id, e.ts) for e in events] == [("e1", T0), ("e2", 1_749_988_800_000)]
    assert rejected == Counter({"wrong_type": 2, "missing_field": 1, "ts_out_of_range": 1})


def test_a_parquet_time_without_a_zone_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "naive.parquet"
    naive = datetime(2025, 6, 15, 12, 0, 0)
    table = pa.table(
        {
            "event_id": ["e1", "e2"],
            "user_id": ["ana", "bo"],
            "type": ["visit", "visit"],
            "ts": pa.array([naive, naive], type=pa.timestamp("ms")),
        }
    )
    pq.write_table(table, path)
    events, rejected = lines_of(path)
    assert events == [] and rejected == Counter({"wrong_type": 2})


def test_nulls_in_parquet_are_absent_fields(tmp_path: Path) -> None:
    path = tmp_path / "nulls.parquet"
    table = pa.table(
        {
            "event_id": ["e1", "e2"],
            "user_id": ["ana", None],
            "type": ["visit", "visit"],
            "ts": [T0, T0],
            "tenant": [None, "acme"],
        }
    )
    pq.write_table(table, path)
    events, rejected = lines_of(path)
    assert [(e.user_id, e.tenant) for e in events] == [("ana", None)]
    assert rejected == Counter({"missing_field": 1})


def test_a_file_named_parquet_that_is_not_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    path.write_text('{"event_id": "e1"}\n')
    with pytest.raises(ConfigurationError, match="not a readable Parquet file"):
        lines_of(path)
    args = ["replay", str(path), "--as-of", str(T0), "--horizon", "30d"]
    args += ["--scores", str(tmp_path / "s.csv")]
    result = CliRunner().invoke(main, args, env={"ENGAGEMENT_HOLDOUT_SALT": "salt"})
    assert result.exit_code != 0 and "not a readable Parquet file" in result.output
