"""Logging set-up of every ``engagement`` process."""

from __future__ import annotations

import logging
import sys

# Their DEBUG output prints whole Kafka records, whose keys are user ids: never
# below INFO, whatever ENGAGEMENT_LOG_LEVEL says (no user ids in logs).
RECORD_LOGGERS = ("aiokafka", "kafka", "faust", "mode")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in RECORD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)
