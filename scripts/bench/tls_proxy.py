#!/usr/bin/env python3
"""TLS in front of the plain-HTTP S3 test server, for pgBackRest (its S3 driver speaks only
https, and OpenSSL 3 refuses moto's own TLS, which closes without close_notify). Loopback only.

Usage: tls_proxy.py LISTEN_PORT UPSTREAM_PORT CERT KEY     (stdlib only; stop it by its PID)
"""
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(256 * 1024)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (OSError, ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()  # on the TLS side: close_notify, then close
            await writer.wait_closed()
        except (OSError, ConnectionError, ssl.SSLError):
            pass


async def main():
    listen, upstream, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def handle(client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=ctx)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
