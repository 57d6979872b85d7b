"""The files of ``engagement report``: ``report.json``, the PNG charts (success rate
by tier and group, retention curves, lifecycle stage counts over time) and one
HTML page holding everything."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import msgspec

from agents.offline.early_warning import activation_cohorts, activation_marks
from agents.offline.history_facts import HistoryFacts
from agents.offline.report import GROUPS, TIERS, build_report, lifecycle_counts, read_jsonl
from streams.records import LifecycleTransition, Signal
from tables.lifecycle import STAGES

_signal_decoder = msgspec.json.Decoder(Signal)
_transition_decoder = msgspec.json.Decoder(LifecycleTransition)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reactivation(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.38
    for offset, group in ((-width / 2, "treatment"), (width / 2, "holdout")):
        rates: list[float] = []
        errors: list[list[float]] = [[], []]
        for tier in TIERS:
            cell = report["by_first_tier"][tier][group]
            rate = cell["rate"] if cell["episodes"] else 0.0
            low, high = cell["ci95"] if cell["episodes"] else (0.0, 0.0)
            rates.append(rate)
            errors[0].append(max(0.0, rate - low))
            errors[1].append(max(0.0, high - rate))
        positions = [i + offset for i in range(len(TIERS))]
        axis.bar(positions, rates, width, yerr=errors, capsize=4, label=group)
    axis.set_xticks(range(len(TIERS)), TIERS)
    outcome = report["outcome"].replace("_", " ")
    axis.set_ylabel(f"{outcome} within {report['window_ms'] / 86_400_000:g} days")
    axis.set_title("Win-back success by the first signal's tier (95 % Wilson intervals)")
    axis.set_ylim(0, 1)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_retention(report: dict[str, Any], path: Path, day_ms: int) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for group, curve in report["retention_by_day"].items():
        axis.step(range(len(curve)), curve, where="post", label=group)
    axis.set_xlabel(f"days since the first signal (day = {day_ms / 86_400_000:g} d)")
    axis.set_ylabel("share returned (Kaplan-Meier)")
    axis.set_title("Return after the first inactivity signal")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_lifecycle(times_ms: list[int], series: dict[str, list[int]], path: Path) -> Path:
    plt = _pyplot()
    import datetime as dt

    figure, axis = plt.subplots(figsize=(8, 4))
    when = [dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC) for t in times_ms]
    axis.stackplot(when, *[series[s] for s in STAGES], labels=list(STAGES))
    axis.set_ylabel("users")
    axis.set_title("Users per lifecycle stage")
    axis.legend(loc="upper left", fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f} %"


def _cohort_html(report: dict[str, Any]) -> str:
    """The retention table (share of each cohort active per period since it began)."""
    cohorts = report.get("cohorts")
    if not cohorts:
        return ""
    rows = []
    for row in cohorts["retention"]:
        labels = " / ".join(html.escape(row[k] or "-") for k in ("tenant", "segment", "group"))
        shares = "".join(
            f"<td>{'n/a' if v is None else f'{100 * v:.0f} %'}</td>" for v in row["share"]
        )
        rows.append(
            f"<tr><td>{labels}</td><td>{row['cohort']}</td><td>{row['size']}</td>{shares}</tr>"
        )
    return (
        "<h2>Cohort retention</h2><table><tr><th>tenant / segment / group</th>"
        "<th>cohort (epoch ms)</th><th>users</th><th>active per period since</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def write_html(report: dict[str, Any], charts: list[Path], path: Path) -> Path:
    rows = []
    for tier in TIERS:
        cells = report["by_first_tier"][tier]
        parts = [f"<td>{tier}</td>"]
        for group in GROUPS:
            c = cells[group]
            parts.append(
                f"<td>{c['successes']}/{c['episodes']}</td><td>{_percent(c['rate'])} "
                f"[{_percent(c['ci95'][0])}, {_percent(c['ci95'][1])}]</td>"
            )
        up = cells["uplift"]
        parts.append(
            f"<td>{_percent(up['difference'])} [{_percent(up['ci95'][0])}, "
            f"{_percent(up['ci95'][1])}]</td>"
        )
        rows.append("<tr>" + "".join(parts) + "</tr>")
    images = "".join(
        f'<p><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></p>'
        for p in charts
    )
    total = report["uplift"]
    body = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Win-back report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
td,th{{padding:.3em .8em;border-bottom:1px solid #ddd}}</style></head><body>
<h1>Win-back report</h1>
<p>{report["eligible_episodes"]} episodes of silence with a full
{report["window_ms"] / 86_400_000:g}-day window (of {report["episodes"]}); outcome:
{report["outcome"].replace("_", " ")}.
Overall uplift (treatment - holdout): <b>{_percent(total["difference"])}</b>
[{_percent(total["ci95"][0])}, {_percent(total["ci95"][1])}] (95 %, Newcombe).</p>
<table><tr><th>first tier</th><th>treatment</th><th>rate</th><th>holdout</th>
<th>rate</th><th>uplift</th></tr>{"".join(rows)}</table>{images}
{_activation_table(report)}
{_cohort_html(report)}
<pre>{html.escape(json.dumps(report["groups"], indent=2))}</pre></body></html>
"""
    path.write_text(body)
    return path


def _activation_table(report: dict[str, Any]) -> str:
    cohorts = report.get("activation")
    if not cohorts:
        return ""
    rows = "".join(
        f"<tr><td>{c['cohort_start_ms']}</td><td>{c['users']}</td>"
        f"<td>{c['activated']}/{c['past_deadline']}</td><td>{_percent(c['activation_rate'])}</td></tr>"
        for c in cohorts
    )
    return (
        "<h2>Activation per weekly cohort</h2><table><tr><th>cohort start (ms)</th>"
        f"<th>users</th><th>activated by the deadline</th><th>rate</th></tr>{rows}</table>"
    )


def write_report(
    signals_path: Path,
    out_dir: Path,
    window_ms: int,
    as_of_ms: int | None = None,
    lifecycle_path: Path | None = None,
    day_ms: int = 86_400_000,
    facts: HistoryFacts | None = None,
    lasting_days: int = 3,
    lasting_window_days: int = 14,
    activation_deadline_ms: int | None = None,
) -> dict[str, Any]:
    """Build the report, write ``report.json``, the PNG charts and ``report.html``;
    with lifecycle records and an activation deadline (activation on), the
    activation rate per weekly cohort (``agents.offline.early_warning``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    signals = read_jsonl(signals_path, _signal_decoder)
    report = build_report(
        signals, window_ms, as_of_ms, day_ms, facts, lasting_days, lasting_window_days
    )
    charts = [
        plot_reactivation(report, out_dir / "reactivation.png"),
        plot_retention(report, out_dir / "retention.png", day_ms),
    ]
    if lifecycle_path is not None:
        transitions = read_jsonl(lifecycle_path, _transition_decoder)
        times, series = lifecycle_counts(transitions, day_ms)
        if times:
            charts.append(plot_lifecycle(times, series, out_dir / "lifecycle.png"))
        if activation_deadline_ms is not None and transitions:
            end_ms = as_of_ms if as_of_ms is not None else max(t.as_of for t in transitions)
            report["activation"] = activation_cohorts(
                activation_marks(transitions), day_ms, activation_deadline_ms, end_ms
            )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_html(report, charts, out_dir / "report.html")
    report["files"] = [str(p) for p in [*charts, out_dir / "report.json", out_dir / "report.html"]]
    return report
