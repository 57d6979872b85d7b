"""The risk model's parameter file, as ``engagement fit`` writes it and the worker loads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from tables.errors import ConfigurationError
from tables.risk import RiskParams

MODEL: Final = "mbg_nbd"


def load_params(path: Path | str, day_ms: int) -> RiskParams:
    """Parameters from a file written by ``engagement fit``, in days of ``day_ms``."""
    try:
        document = json.loads(Path(path).read_text())
        if document.get("model", MODEL) != MODEL:
            raise ConfigurationError(f"{path}: model {document.get('model')!r} is not {MODEL}")
        fitted_day_ms = int(document.get("day_ms", day_ms))
        return RiskParams(
            r=float(document["r"]),
            # alpha is a time scale: in the worker's days it is alpha x (fitted day / day).
            alpha=float(document["alpha"]) * fitted_day_ms / day_ms,
            a=float(document["a"]),
            b=float(document["b"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"cannot load risk parameters from {path}: {exc}") from exc
