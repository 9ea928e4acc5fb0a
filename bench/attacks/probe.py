#!/usr/bin/env python3
# Legit pair: usage
#   probe.py PORT pair OUT.json          -> registers sender+recipient (from 127.0.0.1)
#   probe.py PORT run PAIR.json SECS RATE OUT.json  -> POST /response at RATE/s on one keep-alive conn
import asyncio, json, sys, time
from hc import Conn
port, cmd = int(sys.argv[1]), sys.argv[2]
def pct(xs, p):
    xs = sorted(xs); 
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
async def pair(out):
    c = Conn('127.0.0.1', port, '127.0.0.1')
    st, a = await c.req('POST', '/helo', {'name': 'alice'}); assert st == 201, (st, a)
    st, b = await c.req('POST', '/helo', {'name': 'bob'}); assert st == 201, (st, b)
    json.dump({'sender': json.loads(a), 'recipient': json.loads(b)}, open(out, 'w'))
async def run(pf, secs, rate, out):
    p = json.load(open(pf))
    tok, rid = p['sender']['token'], p['recipient']['id']
    c = Conn('127.0.0.1', port, '127.0.0.1'); await c.open()
    lat, errs = [], {}
    t0 = time.monotonic(); i = 0
    while True:
        nxt = t0 + i / rate
        now = time.monotonic()
        if nxt - t0 >= secs: break
        if nxt > now: await asyncio.sleep(nxt - now)
        s = time.perf_counter()
        try:
            st, body = await c.req('POST', '/response', {'recipient': rid, 'message': {'n': i, 'text': 'hello'}}, token=tok, timeout=10)
        except Exception as e:
            errs[type(e).__name__] = errs.get(type(e).__name__, 0) + 1; i += 1; continue
        d = (time.perf_counter() - s) * 1000
        if st == 202: lat.append(d)
        else: errs[str(st)] = errs.get(str(st), 0) + 1
        i += 1
    c.close()
    r = {'n': len(lat), 'errors': errs}
    if lat:
        r.update(p50_ms=round(pct(lat, 50), 3), p99_ms=round(pct(lat, 99), 3), max_ms=round(max(lat), 3),
                 mean_ms=round(sum(lat) / len(lat), 3))
    json.dump(r, open(out, 'w')); print(json.dumps(r))
if cmd == 'pair': asyncio.run(pair(sys.argv[3]))
else: asyncio.run(run(sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]))
