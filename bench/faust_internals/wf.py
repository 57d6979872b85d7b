import asyncio
import time

from mode import Service


class S(Service):
    pass


async def cb(m):
    return None


async def main():
    s = S()
    await s.start()
    ev = asyncio.Event()
    N = 20000
    t = time.perf_counter()
    for i in range(N):
        await s.wait_first(cb(i), ev.wait())
    dt = time.perf_counter() - t
    print(f"wait_first per msg: {dt / N * 1e6:.1f} us -> {N / dt:,.0f}/s")
    t = time.perf_counter()
    for i in range(N):
        await cb(i)
    dt = time.perf_counter() - t
    print(f"plain await per msg: {dt / N * 1e6:.2f} us")
    await s.stop()


asyncio.run(main())
