import asyncio
import time

import faust
from faust.types.tuples import TP, ConsumerMessage


async def main():
    app = faust.App(
        "bench-ack", broker="kafka://localhost:1", autodiscover=False, web_enabled=False
    )
    app.topics._acking_topics.add("events")
    c = app.consumer
    tp = TP("events", 0)
    N = 100_000
    msgs = [
        ConsumerMessage("events", 0, i, 0.0, 0, [], b"k", b"v", None, 1, 1, tp, generation_id=1)
        for i in range(N)
    ]
    t = time.perf_counter()
    for m in msgs:
        c.ack(m)
    dt = time.perf_counter() - t
    print(f"Consumer.ack: {dt / N * 1e6:.2f} us/msg")
    t = time.perf_counter()
    off = c._new_offset(tp)
    dt = time.perf_counter() - t
    print(f"_new_offset over {N} acked: {dt * 1e3:.1f} ms -> {off}")
    # track_message
    msgs2 = [
        ConsumerMessage("events", 0, N + i, 0.0, 0, [], b"k", b"v", None, 1, 1, tp, generation_id=1)
        for i in range(N)
    ]
    t = time.perf_counter()
    for m in msgs2:
        c.track_message(m)
    dt = time.perf_counter() - t
    print(f"Consumer.track_message: {dt / N * 1e6:.2f} us/msg")
    # out-of-order / head-gap behaviour
    c._committed_offset[tp] = 300_000
    for o in (300_001, 300_002):
        c.ack(
            ConsumerMessage("events", 0, o, 0.0, 0, [], b"k", b"v", None, 1, 1, tp, generation_id=1)
        )
    c._acked[tp] = [x for x in c._acked[tp] if x >= 300_000]
    print("committed=300000, acked 300001,300002 (300000 not acked) ->", c._new_offset(tp))
    c._committed_offset[tp] = 400_000
    c._acked[tp].clear()
    for o in (400_002, 400_003):
        c.ack(
            ConsumerMessage("events", 0, o, 0.0, 0, [], b"k", b"v", None, 1, 1, tp, generation_id=1)
        )
    print("committed=400000, acked 400002,400003 ->", c._new_offset(tp))


asyncio.run(main())
