#!/usr/bin/env python3
# Helo flood: N keep-alive connections sending POST /helo as fast as possible.
# usage: flood.py PORT SRC CONC (--count N | --duration S) OUT.json
import asyncio, json, sys, time
from hc import Conn
port, src, conc = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
mode, lim, out = sys.argv[4], float(sys.argv[5]), sys.argv[6]
done_ts = []   # completion time of each 201
errs = {}
t0 = time.monotonic()
stop = False
async def worker(i):
    global stop
    c = Conn('127.0.0.1', port, src)
    while not stop:
        if mode == '--count' and len(done_ts) >= lim:
            break
        if mode == '--duration' and time.monotonic() - t0 >= lim:
            break
        try:
            st, b = await c.req('POST', '/helo', {'name': f'f{i}'}, timeout=60)
        except Exception as e:
            errs[type(e).__name__] = errs.get(type(e).__name__, 0) + 1
            await asyncio.sleep(0.05); continue
        if st == 201:
            done_ts.append(time.monotonic() - t0)
        else:
            errs[str(st)] = errs.get(str(st), 0) + 1
    c.close()
async def main():
    await asyncio.gather(*(worker(i) for i in range(conc)))
asyncio.run(main())
el = time.monotonic() - t0
n = len(done_ts)
res = {'src': src, 'conc': conc, 'ok': n, 'elapsed_s': round(el, 2),
       'rate': round(n / el, 1) if el else 0, 'errors': errs}
# per-1000 marks and last-5000 rate
res['t_at_k'] = {str(k): round(done_ts[k - 1], 2) for k in range(1000, n + 1, 1000)}
if n >= 5000:
    res['rate_last5000'] = round(5000 / (done_ts[-1] - done_ts[-5001]), 1) if n > 5000 else None
# per-second histogram
ps = {}
for t in done_ts:
    ps[int(t)] = ps.get(int(t), 0) + 1
res['per_s'] = [ps.get(s, 0) for s in range(int(el) + 1)]
json.dump(res, open(out, 'w'))
print(json.dumps({k: v for k, v in res.items() if k not in ('t_at_k', 'per_s')}))
