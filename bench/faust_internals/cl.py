import asyncio
import time

import faust


async def main():
    app = faust.App(
        "bench-cl",
        broker="kafka://localhost:1",
        autodiscover=False,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    users = app.Table("users", partitions=8, key_type=bytes, value_type=bytes)
    N = 50_000
    t = time.perf_counter()
    for i in range(N):
        users.send_changelog(i % 8, b"user-%d" % i, b"x" * 124)
    dt = time.perf_counter() - t
    print(
        f"Table.send_changelog (enqueue only, ProducerBuffer): {dt / N * 1e6:.2f} us/record, "
        f"buffer size={app.producer.buffer.size}"
    )
    try:
        users[b"k"] = b"v"
    except Exception as exc:
        print("table[key]=value with no current event ->", type(exc).__name__, exc)
    t = time.perf_counter()
    for i in range(N):
        users.data[b"user-%d" % i] = b"x" * 124
    dt = time.perf_counter() - t
    print(f"table.data[key]=value (memory store): {dt / N * 1e6:.2f} us/record")


asyncio.run(main())
