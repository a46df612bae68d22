#!/usr/bin/env python3
"""A latency- and bandwidth-shaped loopback proxy in front of the S3 test server, so that a
benchmark sees what real S3 costs: every request waits DELAY_MS before its first response
byte (a new request is a client write after the last response bytes), and each connection
moves at most RATE bytes per second in each direction. Loopback only, stdlib only.

Usage: shaped_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS RATE_BYTES_PER_S   (stop it by its PID)
Prints one line, `requests N`, to stderr at exit (SIGTERM).
"""
import asyncio
import signal
import sys
import time

CHUNK = 64 * 1024


class Shape:
    def __init__(self, delay_s, rate):
        self.delay_s, self.rate = delay_s, rate
        self.requests = 0


async def pump(reader, writer, shape, conn, upstream_side):
    """Copy bytes, at most `shape.rate` per second; on the response side, wait the delay
    before the first byte of each response."""
    sent, t0 = 0, time.monotonic()
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            if upstream_side:
                if conn["pending"]:
                    conn["pending"] = False
                    await asyncio.sleep(shape.delay_s)
            elif not conn["pending"]:
                conn["pending"] = True
                shape.requests += 1
            writer.write(data)
            await writer.drain()
            sent += len(data)
            if shape.rate > 0:
                ahead = sent / shape.rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    except (OSError, ConnectionError):
        pass
    finally:
        try:
            writer.close()
            await writer.wait_closed()
        except (OSError, ConnectionError):
            pass


async def main():
    listen, upstream = int(sys.argv[1]), int(sys.argv[2])
    shape = Shape(float(sys.argv[3]) / 1000.0, int(sys.argv[4]))

    async def handle(client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_w.close()
            return
        conn = {"pending": False}
        await asyncio.gather(pump(client_r, up_w, shape, conn, False), pump(up_r, client_w, shape, conn, True))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    print(f"requests {shape.requests}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
