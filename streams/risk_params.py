"""The risk model's file, as ``engagement fit`` writes it and the worker loads it.

Two kinds (``model``): ``mbg_nbd`` (population parameters of ``tables.risk``)
and ``learned_logistic`` (``tables.learned_risk``: weights per horizon and
the MBG/NBD parameters one feature uses). A learned file holds the horizons
it was fitted for; asking for another one is refused (``ConfigurationError``)
rather than guessed. Each file names its version; signals carry it.
Either kind may hold ``cadence``: the usual gap of each population in
hundredths of a day (``tables.population``), keyed ``tenant/segment`` or
``tenant``, which new users' thresholds start from (``tables.thresholds``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final

import msgspec

from tables.errors import ConfigurationError
from tables.learned_risk import FEATURES, LearnedRisk
from tables.risk import RiskParams

MODEL: Final = "mbg_nbd"
LEARNED: Final = "learned_logistic"


class RiskModel(msgspec.Struct, frozen=True):
    """What the model config takes from a risk file."""

    params: RiskParams
    learned: LearnedRisk | None
    version: str
    cadence: dict[str, int] = msgspec.field(default_factory=dict)


def _params(document: dict[str, Any], day_ms: int) -> RiskParams:
    fitted_day_ms = int(document.get("day_ms", day_ms))
    return RiskParams(
        r=float(document["r"]),
        # alpha is a time scale: in the worker's days it is alpha x (fitted day / day).
        alpha=float(document["alpha"]) * fitted_day_ms / day_ms,
        a=float(document["a"]),
        b=float(document["b"]),
    )


def _read(path: Path | str) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load risk parameters from {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigurationError(f"{path}: a risk model file is a JSON object")
    return document


def load_params(path: Path | str, day_ms: int) -> RiskParams:
    """MBG/NBD parameters from a file written by ``engagement fit``, in days of ``day_ms``."""
    return load_risk_model(path, day_ms, None).params


def load_risk_model(path: Path | str, day_ms: int, horizon_ms: int | None) -> RiskModel:
    """The risk model in ``path`` for the worker's day and horizon.

    A learned file needs ``horizon_ms`` among its fitted horizons and the
    day length it was fitted with (its features count days); ``None`` takes
    only its MBG/NBD parameters."""
    return risk_model_of(_read(path), day_ms, horizon_ms, str(path))


def risk_model_of(
    document: dict[str, Any], day_ms: int, horizon_ms: int | None, path: str = "the risk model"
) -> RiskModel:
    """``load_risk_model`` on a document already read (``engagement evaluate`` fits one)."""
    model = document.get("model", MODEL)
    try:
        cadence = _cadence(document.get("cadence", {}))
        if model == MODEL:
            version = document.get("version") or f"{MODEL}-{_digest(document)}"
            return RiskModel(_params(document, day_ms), None, str(version), cadence)
        if model != LEARNED:
            raise ConfigurationError(f"{path}: model {model!r} is neither {MODEL} nor {LEARNED}")
        params = _params(document["mbg_nbd"], day_ms)
        if horizon_ms is None:
            return RiskModel(params, None, str(document["version"]), cadence)
        fitted_day_ms = int(document["day_ms"])
        if fitted_day_ms != day_ms:
            raise ConfigurationError(
                f"{path}: fitted with days of {fitted_day_ms} ms, the worker's are {day_ms} ms;"
                " fit it again with ENGAGEMENT_DAY_MS as the worker has it"
            )
        if list(document["features"]) != list(FEATURES):
            raise ConfigurationError(f"{path}: features {document['features']} are not {FEATURES}")
        horizons = {int(h["horizon_ms"]): h for h in document["horizons"]}
        chosen = horizons.get(horizon_ms)
        if chosen is None:
            fitted = ", ".join(f"{h} ms" for h in sorted(horizons))
            raise ConfigurationError(
                f"{path}: risk model fitted for horizons {fitted}, not for {horizon_ms} ms"
                " (ENGAGEMENT_HORIZON); fit it with --horizon for that horizon"
            )
        version = str(document["version"])
        learned = LearnedRisk(
            version=version,
            horizon_ms=horizon_ms,
            day_ms=day_ms,
            weights=tuple(float(w) for w in chosen["weights"]),
            mbg=params,
        )
        return RiskModel(params, learned, version, cadence)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"cannot load risk parameters from {path}: {exc}") from exc


def _cadence(found: Any) -> dict[str, int]:
    """The population cadence of a file: positive whole centidays by scope."""
    if not isinstance(found, dict):
        raise ValueError(f"cadence must be an object of scope: centidays, not {found!r}")
    cadence = {str(scope): int(gap) for scope, gap in found.items()}
    bad = sorted(scope for scope, gap in cadence.items() if not 0 < gap <= 0xFFFF)
    if bad:
        raise ValueError(f"cadence of {bad} is not within 1..65535 centidays")
    return cadence


def _digest(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:12]


def version_of(document: dict[str, Any]) -> str:
    """The version a learned file names: its kind and a digest of its content."""
    return f"{LEARNED}-{_digest({k: v for k, v in document.items() if k != 'version'})}"
