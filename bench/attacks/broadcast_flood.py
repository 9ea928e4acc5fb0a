#!/usr/bin/env python3
"""One session broadcasts 60 KB messages as fast as it can for SECS; how many bytes per second
does the server accept from it (and so store in, and send to, every other session)?
usage: broadcast_flood.py PORT SECS RECIPIENTS"""
import asyncio, json, sys, time
from hc import Conn
port, secs, recipients = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
async def main():
    c = Conn('127.0.0.1', port)
    for i in range(recipients):
        st, _ = await c.req('POST', '/helo', {'name': f'r{i}'}); assert st == 201, st
    st, b = await c.req('POST', '/helo', {'name': 'sender'}); assert st == 201, st
    tok = json.loads(b)['token']
    message = 'x' * 60000
    size = len(json.dumps(message))
    statuses, t0 = {}, time.monotonic()
    while time.monotonic() - t0 < secs:
        st, _ = await c.req('POST', '/broadcast', {'message': message}, token=tok)
        statuses[st] = statuses.get(st, 0) + 1
    elapsed = time.monotonic() - t0
    accepted = statuses.get(202, 0) * size
    print(json.dumps({"statuses": statuses, "secs": round(elapsed, 1),
                      "accepted_mib_per_s": round(accepted / elapsed / 2**20, 2),
                      "out_mib_per_s": round(accepted * recipients / elapsed / 2**20, 1)}))
asyncio.run(main())
