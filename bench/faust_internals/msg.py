import time
from collections import namedtuple

from faust.transport.utils import DefaultSchedulingStrategy
from faust.types.tuples import TP, ConsumerMessage

R = namedtuple(
    "R",
    "topic partition offset timestamp timestamp_type headers key value checksum "
    "serialized_key_size serialized_value_size",
)
tps = [TP("events", p) for p in range(8)]
records = {
    tp: [
        R("events", tp.partition, i, 1700000000000, 0, [], b"u%d" % i, b"x" * 100, None, 5, 100)
        for i in range(12500)
    ]
    for tp in tps
}
N = sum(len(v) for v in records.values())
s = DefaultSchedulingStrategy()
t = time.perf_counter()
out = []
for tp, r in s.iterate(records):
    out.append(
        ConsumerMessage(
            r.topic,
            r.partition,
            r.offset,
            r.timestamp / 1000.0,
            r.timestamp_type,
            r.headers,
            r.key,
            r.value,
            r.checksum,
            r.serialized_key_size,
            r.serialized_value_size,
            tp,
            generation_id=1,
        )
    )
dt = time.perf_counter() - t
print(f"scheduler+ConsumerMessage: {dt / N * 1e6:.2f} us/record")
t = time.perf_counter()
for _tp, rs in records.items():
    for _r in rs:
        pass
dt = time.perf_counter() - t
print(f"plain iteration: {dt / N * 1e6:.3f} us/record")
