"""Logging set-up of every ``engagement`` process: plain text or one JSON object a line.

No log line carries a user id (docs/CONTRACTS.md, "Metric labels"): the
project's own messages never format one, and the Kafka and Faust loggers,
whose DEBUG output prints whole records, stay at INFO or above.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

# Their DEBUG output prints whole Kafka records, whose keys are user ids: never
# below INFO, whatever ENGAGEMENT_LOG_LEVEL says (no user ids in logs).
RECORD_LOGGERS = ("aiokafka", "kafka", "faust", "mode")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (RFC 3339, UTC, ms), ``level``, ``logger``,
    ``message``, and ``exception`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: Literal["text", "json"] = "text") -> None:
    """The root handler on stderr, in the chosen format (once per process)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler])
    for name in RECORD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)
