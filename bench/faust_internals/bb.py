import asyncio
import time

from aiokafka import AIOKafkaProducer


async def main():
    p = AIOKafkaProducer(bootstrap_servers="localhost:1", linger_ms=5, acks=-1)
    N = 100_000
    n_batches = 0
    b = p.create_batch()
    t = time.perf_counter()
    for i in range(N):
        if b.append(key=b"user-%d" % i, value=b"x" * 124, timestamp=None) is None:
            n_batches += 1
            b = p.create_batch()
            b.append(key=b"user-%d" % i, value=b"x" * 124, timestamp=None)
    dt = time.perf_counter() - t
    print(f"BatchBuilder.append: {dt / N * 1e6:.2f} us/record, {n_batches} full batches of {N}")


asyncio.run(main())
