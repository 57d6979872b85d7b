"""The learned risk model: fit by backtesting, load, refuse what it was not fitted for, name
its version on every signal, and score from the state alone.

A seeded stress history (drifting rates, one-time users, time-based dropout);
assertions on outcomes, never on time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner

from agents.cli.main import main
from agents.offline.evaluate import stress_history
from agents.offline.learn import fit_weights, learn, predict, write_model
from agents.offline.replay import run_history
from streams.model_settings import model_config
from streams.records import Signal
from streams.risk_params import load_risk_model
from streams.settings import load_settings
from tables.errors import ConfigurationError
from tables.learned_risk import FEATURES, active_days_within, events_within
from tables.state import counts_by_age
from tables.user_risk import risk_at

DAY_MS = 86_400_000
START_MS = 1_735_689_600_000  # 2025-01-01
CUTOFF_MS = START_MS + 80 * DAY_MS
HORIZONS_MS = [14 * DAY_MS, 30 * DAY_MS]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("learned") / "stress.jsonl"
    path.write_text("\n".join(stress_history(800, 120, 3, START_MS, DAY_MS)) + "\n")
    return path


@pytest.fixture(scope="module")
def artifact(
    history: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    config = model_config(load_settings())
    document = learn(history, CUTOFF_MS, HORIZONS_MS, config)
    path = tmp_path_factory.mktemp("model") / "risk.json"
    write_model(path, document)
    return path, document


def test_each_horizon_is_fitted_on_instants_before_the_cutoff_and_measured_held_out(
    artifact: tuple[Path, dict[str, Any]],
) -> None:
    _path, document = artifact
    assert [h["horizon_ms"] for h in document["horizons"]] == HORIZONS_MS
    for horizon in document["horizons"]:
        # every backtest label lies before the cutoff
        assert max(horizon["instants_ms"]) + horizon["horizon_ms"] <= CUTOFF_MS
        assert horizon["held_out"]["at_ms"] == max(horizon["instants_ms"])
        held_out = horizon["held_out"]
        assert held_out["roc_auc"] > 0.7
        bins = held_out["reliability"]
        assert sum(b["count"] for b in bins) == held_out["users"]
        assert held_out["expected_calibration_error"] < 0.1  # reliability measured, and good
        assert len(horizon["weights"]) == len(FEATURES)


def test_the_worker_loads_the_fitted_horizon_and_refuses_another(
    artifact: tuple[Path, dict[str, Any]],
) -> None:
    path, document = artifact
    config = model_config(load_settings(risk_params=str(path), horizon_ms="14d"))
    assert config.learned is not None
    assert config.risk_model == document["version"]
    assert config.learned.horizon_ms == 14 * DAY_MS
    with pytest.raises(ConfigurationError, match="not for 604800000 ms"):
        model_config(load_settings(risk_params=str(path), horizon_ms="7d"))
    with pytest.raises(ConfigurationError, match="days of 86400000 ms"):
        load_risk_model(path, 1_000, 14_000)


def test_a_changed_file_is_refused_or_gets_another_version(
    artifact: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, document = artifact
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**document, "features": ["bias"]}))
    with pytest.raises(ConfigurationError, match="features"):
        load_risk_model(broken, DAY_MS, 14 * DAY_MS)
    nan = json.loads(path.read_text())
    nan["horizons"][0]["weights"][1] = "nan"
    broken.write_text(json.dumps(nan))
    with pytest.raises(ConfigurationError, match="not finite"):
        load_risk_model(broken, DAY_MS, 14 * DAY_MS)
    broken.write_text("{")
    with pytest.raises(ConfigurationError, match="cannot load"):
        load_risk_model(broken, DAY_MS, 14 * DAY_MS)


def test_every_signal_names_the_model_version_that_scored_it(
    history: Path, artifact: tuple[Path, dict[str, Any]]
) -> None:
    path, document = artifact
    for risk_params, version in ((str(path), document["version"]), (None, "mbg_nbd-default")):
        config = model_config(load_settings(risk_params=risk_params, horizon_ms="30d"))
        signals: list[Signal] = []
        collect = signals.extend
        run_history(
            history,
            CUTOFF_MS + 30 * DAY_MS,
            config,
            on_signals=lambda emissions, collect=collect: collect(  # type: ignore[misc]
                map(Signal.from_emission, emissions)
            ),
            progress=False,
        )
        assert len(signals) > 100
        assert {signal.risk_model for signal in signals} == {version}
        encoded = json.loads(msgspec.json.encode(signals[0]))
        assert encoded["risk_model"] == version


def test_scores_are_probabilities_that_grow_with_silence(
    history: Path, artifact: tuple[Path, dict[str, Any]]
) -> None:
    path, _document = artifact
    config = model_config(load_settings(risk_params=str(path), horizon_ms="30d"))
    states = run_history(history, CUTOFF_MS, config, progress=False).store.states
    for state in list(states.values())[:200]:
        later = [risk_at(state, state.last_seen_ms + days * DAY_MS, config) for days in (1, 20, 60)]
        assert all(0.0 <= r <= 1.0 and math.isfinite(r) for r in later)
        assert later[0] <= later[2]


def test_active_days_within_a_window_count_the_days_with_events(
    history: Path,
) -> None:
    config = model_config(load_settings())
    states = run_history(history, CUTOFF_MS, config, progress=False).store.states
    for state in list(states.values())[:300]:
        for offset in (0, 3, 10, 40):
            day = state.last_seen_ms // DAY_MS + offset
            counts = counts_by_age(state, day)
            for days in (7, 28):
                expected = sum(1 for count in counts[:days] if count)
                assert active_days_within(state, day, days) == expected
                assert events_within(state, day, days) == sum(counts[:days])


def test_fit_cli_writes_the_model_and_refuses_a_short_history(
    history: Path, tmp_path: Path
) -> None:
    out = tmp_path / "risk.json"
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["fit", str(history), "--cutoff", str(CUTOFF_MS), "--horizon", "14d", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["version"] == json.loads(result.stdout)["version"]
    short = runner.invoke(
        main,
        [
            *("fit", str(history), "--cutoff", str(START_MS + 15 * DAY_MS), "--horizon", "14d"),
            *("--out", str(tmp_path / "short.json")),
        ],
    )
    assert short.exit_code != 0
    assert "too short to backtest" in short.output
    assert not (tmp_path / "short.json").exists()


def test_replay_scores_with_the_learned_model_only_for_its_horizons(
    history: Path, artifact: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, _document = artifact
    scores = tmp_path / "scores.csv"
    runner = CliRunner()
    args = ["replay", str(history), "--as-of", str(CUTOFF_MS), "--scores", str(scores)]
    refused = runner.invoke(main, [*args, "--horizon", "7d", "--params", str(path)])
    assert refused.exit_code != 0
    assert "not for 604800000 ms" in refused.output
    done = runner.invoke(main, [*args, "--horizon", "14d", "--params", str(path)])
    assert done.exit_code == 0, done.output
    learned = scores.read_text()
    plain = runner.invoke(main, [*args, "--horizon", "14d"])
    assert plain.exit_code == 0, plain.output
    assert scores.read_text() != learned  # the file changed the scores


def synthetic_rows(seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Random features; the label leans on recent activity (+) and silence (-)."""
    rng = np.random.default_rng(seed)
    rows = 3_000
    x = np.column_stack([np.ones(rows), *(rng.normal(size=rows) for _ in FEATURES[1:])])
    share, silence = FEATURES.index("active_share_7d"), FEATURES.index("log_recency_days")
    p = 1.0 / (1.0 + np.exp(-(0.3 + 1.5 * x[:, share] - 1.5 * x[:, silence])))
    return x, (rng.random(rows) < p).astype(np.int64)


def test_the_fit_matches_scikit_learns_logistic_regression_with_row_weights() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = synthetic_rows(1)
    weights = np.random.default_rng(3).uniform(0.1, 1.0, len(y))
    for row_weights in (None, weights):
        ours = predict(fit_weights(x, y, 1e-8, row_weights), x)
        reference = LogisticRegression(C=1e8, max_iter=10_000, tol=1e-10)
        reference.fit(x[:, 1:], y, sample_weight=row_weights)
        theirs = reference.predict_proba(x[:, 1:])[:, 1]
        assert float(np.max(np.abs(ours - theirs))) < 1e-4


def test_a_worker_with_a_file_for_other_horizons_stops_before_the_broker(
    artifact: tuple[Path, dict[str, Any]],
) -> None:
    from agents.worker.run import run_worker

    path, _document = artifact
    settings = load_settings(
        risk_params=str(path), horizon_ms="7d", broker="kafka://127.0.0.1:9"
    ).with_generated_secrets()
    with pytest.raises(ConfigurationError, match="not for 604800000 ms"):
        run_worker(settings)
