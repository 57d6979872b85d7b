"""The peer reference for ``engagement bench``: a naive Faust agent, one table write per event.

Run as ``python -m agents.bench.naive BROKER TOPIC EVENTS APP_ID``; prints one
JSON line ``{"first_s": ..., "last_s": ..., "events": ...}`` once it has
consumed EVENTS records, then exits.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import faust


def main(argv: list[str]) -> None:
    broker, topic_name, expected_text, app_id = argv[1:5]
    expected = int(expected_text)
    app = faust.App(
        app_id,
        broker=broker,
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=6,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
    )
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes)
    table = app.Table("counts", default=int, key_type=bytes, value_type=bytes)
    marks: dict[str, float] = {}

    @app.agent(topic)
    async def count(stream: Any) -> None:
        seen = 0
        async for key, value in stream.items():
            if seen == 0:
                marks["first_s"] = time.time()
            event = json.loads(value)
            table[key] = str(event.get("ts", 0)).encode()  # the input also carries $tick records
            seen += 1
            if seen >= expected:
                marks["last_s"] = time.time()
                print(json.dumps({**marks, "events": seen}), flush=True)
                os._exit(0)  # the figure is out; skip Faust's slow shutdown

    # redirect_stdouts=False: by default Faust turns stdout into log lines, and
    # the figure line must reach the bench on stdout
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv)
