"""Long-lived clients for bench/chaos.sh: WebSocket and Server-Sent Events connections held
open through a fault, each reconnecting after it ends, and how each connection ended.

  longlived.py HOST:PORT SECONDS [--ws 20] [--sse 20]

A WebSocket client sends a text message every 250 ms and expects it back; an SSE client reads
`GET /events?every=250ms`. Every end of a connection is counted by kind:
  clean        WebSocket: a close frame (by code); SSE: the chunked stream's last chunk
  eof          the connection closed without either (a FIN mid-stream)
  reset        the connection was reset (RST) or failed with another socket error
  stalled      nothing arrived for 3 s while the connection stayed open (the client gives up)
  refused      a reconnect found no listener, or was not answered 101 / 200
Plain standard library (asyncio): the framing is the few lines RFC 6455 needs for a client.
Prints one JSON object.
"""

import asyncio
import base64
import json
import os
import random
import struct
import sys
import time

STALL = 3.0
EVERY = 0.25


def new_stats():
    return {"opened": 0, "clean": 0, "close_codes": {}, "eof": 0, "reset": 0, "stalled": 0,
            "refused": 0, "messages": 0}


async def connect(host, port, request, expect):
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    w.write(request)
    await w.drain()
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 3)
    if not head.startswith(expect):
        w.close()
        raise ConnectionRefusedError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return r, w, head


def ws_frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_read(r):
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await r.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await r.readexactly(8))
    return b0 & 0x0F, await r.readexactly(n)


async def ws_once(host, port, stats, end):
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    r, w, _ = await connect(host, port, request, b"HTTP/1.1 101")
    stats["opened"] += 1

    async def send():
        n = 0
        while time.monotonic() < end:
            n += 1
            w.write(ws_frame(1, str(n).encode()))
            await w.drain()
            await asyncio.sleep(EVERY)

    sender = asyncio.create_task(send())
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                w.write(ws_frame(8, struct.pack("!H", 1000)))
                return "ours"
            try:
                op, payload = await asyncio.wait_for(ws_read(r), min(STALL, left + 0.5))
            except asyncio.TimeoutError:
                if time.monotonic() >= end:
                    return "ours"
                return "stalled"
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                stats["close_codes"][str(code)] = stats["close_codes"].get(str(code), 0) + 1
                try:
                    w.write(ws_frame(8, payload[:2]))
                    await w.drain()
                except OSError:
                    pass
                return "clean"
            if op == 1:
                stats["messages"] += 1
    finally:
        sender.cancel()
        w.close()


async def sse_once(host, port, stats, end):
    request = (
        f"GET /events?every=250ms HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    r, w, head = await connect(host, port, request, b"HTTP/1.1 200")
    if b"chunked" not in head.lower():
        w.close()
        raise ConnectionRefusedError("an event stream not chunked")
    stats["opened"] += 1
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return "ours"
            try:
                line = await asyncio.wait_for(r.readuntil(b"\r\n"), min(STALL, left + 0.5))
            except asyncio.TimeoutError:
                return "ours" if time.monotonic() >= end else "stalled"
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await asyncio.wait_for(r.readuntil(b"\r\n"), 2)
                return "clean"
            chunk = await r.readexactly(size + 2)
            stats["messages"] += chunk.count(b"event:")
    finally:
        w.close()


async def client(kind, host, port, stats, end):
    once = ws_once if kind == "ws" else sse_once
    # Spread the first connections so that they land on every target.
    await asyncio.sleep(random.uniform(0, 0.5))
    while time.monotonic() < end:
        try:
            how = await once(host, port, stats, end)
        except (asyncio.IncompleteReadError, EOFError):
            how = "eof"
        except ConnectionRefusedError:
            how = "refused"
        except (ConnectionResetError, BrokenPipeError):
            how = "reset"
        except asyncio.TimeoutError:
            how = "stalled"
        except (OSError, ValueError):
            how = "reset"
        if how != "ours" and how != "clean":
            stats[how] += 1
        elif how == "clean":
            stats["clean"] += 1
        # As a browser's EventSource or a client library would: back after a moment.
        await asyncio.sleep(random.uniform(0.1, 0.5))


async def main():
    addr, seconds = sys.argv[1], float(sys.argv[2])
    n_ws = n_sse = 20
    args = sys.argv[3:]
    while args:
        if args[0] == "--ws":
            n_ws = int(args[1])
        elif args[0] == "--sse":
            n_sse = int(args[1])
        else:
            sys.exit(f"unknown option {args[0]}")
        args = args[2:]
    host, port = addr.rsplit(":", 1)
    end = time.monotonic() + seconds
    out = {"ws": new_stats(), "sse": new_stats()}
    tasks = [client("ws", host, int(port), out["ws"], end) for _ in range(n_ws)]
    tasks += [client("sse", host, int(port), out["sse"], end) for _ in range(n_sse)]
    await asyncio.gather(*tasks)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
