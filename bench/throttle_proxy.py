#!/usr/bin/env python3
"""A userspace TCP proxy that models a slow link (there is no netem here): every chunk is
delayed by LATENCY_MS/2 in each direction (so a round trip gains LATENCY_MS) and each direction
is capped at RATE_MBIT megabits per second, shared by all connections. Pipelining is kept (a
queue per direction), so latency does not cap throughput. Counts the bytes relayed each way and
writes them to COUNT_FILE ("down up") every 0.2 s and at exit.

  throttle_proxy.py LISTEN_PORT TARGET_HOST:PORT LATENCY_MS RATE_MBIT COUNT_FILE
Loopback only: it listens on 127.0.0.1 and refuses targets that are not 127.0.0.1.
"""
import asyncio
import signal
import sys
import time


class Link:
    """One direction of the link: a token bucket over wall time."""

    def __init__(self, rate_bytes):
        self.rate = rate_bytes
        self.next_free = 0.0
        self.bytes = 0

    def reserve(self, n):
        now = time.monotonic()
        start = max(now, self.next_free)
        self.next_free = start + n / self.rate if self.rate > 0 else start
        self.bytes += n
        return self.next_free


async def pump(reader, writer, link, delay):
    q = asyncio.Queue()

    async def deliver():
        while True:
            item = await q.get()
            if item is None:
                break
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    task = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            arrive = time.monotonic() + delay
            free = link.reserve(len(data))
            await q.put((max(arrive, free), data))
            # Backpressure: do not read far ahead of what the link can carry.
            while q.qsize() > 64:
                await asyncio.sleep(0.001)
    except (ConnectionError, OSError):
        pass
    await q.put(None)
    try:
        await task
    except (ConnectionError, OSError):
        pass


async def main():
    port, target, latency_ms, rate_mbit, count_file = sys.argv[1:6]
    thost, tport = target.rsplit(":", 1)
    if thost != "127.0.0.1":
        sys.exit("throttle_proxy: loopback targets only")
    delay = float(latency_ms) / 2000.0
    rate = float(rate_mbit) * 1e6 / 8
    down, up = Link(rate), Link(rate)

    async def handle(creader, cwriter):
        try:
            sreader, swriter = await asyncio.open_connection(thost, int(tport))
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(pump(creader, swriter, up, delay), pump(sreader, cwriter, down, delay))
        for w in (cwriter, swriter):
            try:
                w.close()
            except OSError:
                pass

    def dump():
        with open(count_file, "w") as f:
            f.write("%d %d\n" % (down.bytes, up.bytes))

    async def dumper():
        last = None
        while True:
            await asyncio.sleep(0.2)
            if (down.bytes, up.bytes) != last:
                last = (down.bytes, up.bytes)
                dump()

    server = await asyncio.start_server(handle, "127.0.0.1", int(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    d = asyncio.ensure_future(dumper())
    dump()
    async with server:
        await stop.wait()
    d.cancel()
    dump()


if __name__ == "__main__":
    asyncio.run(main())
