"""N idle TCP connections from 127.0.0.2 that send nothing; time connect -> EOF, RST or answer.
Legit client from 127.0.0.1 attempts /healthz + full exchange every 250 ms."""
import asyncio, sys, time, json
from common import *

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
PID = int(sys.argv[2])
SRC = "127.0.0.2"

async def idle(i, res):
    t = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(HOST, PORT, local_addr=(SRC, 0)), 10)
    except Exception as e:
        res.append(("connect_fail", 0, type(e).__name__, b"")); return
    tc = time.monotonic()
    how, data = "eof", b""
    try:
        data = await asyncio.wait_for(r.read(4096), 120)
        if data:
            how = "data"
            rest = await asyncio.wait_for(r.read(), 120)
            data += rest
    except ConnectionResetError:
        how = "rst"
    except asyncio.TimeoutError:
        how = "timeout120"
    res.append((how, time.monotonic() - tc, "", data[:60]))
    w.close()

async def main():
    log, res, fdsamples = [], [], []
    stop = asyncio.Event()
    t0 = time.monotonic()
    mon = asyncio.ensure_future(monitor(log, stop))
    async def fds():
        while not stop.is_set():
            try: fdsamples.append((time.monotonic() - t0, nfds(PID)))
            except Exception: pass
            await asyncio.sleep(0.5)
    fdt = asyncio.ensure_future(fds())
    tasks = [asyncio.ensure_future(idle(i, res)) for i in range(N)]
    await asyncio.gather(*tasks)
    tclosed = time.monotonic()
    await asyncio.sleep(10.5)
    stop.set(); await mon; await fdt
    held = [d for (h, d, e, _) in res if h != "connect_fail"]
    from collections import Counter
    out = {
        "n": N, "outcomes": dict(Counter(h for h, *_ in res)),
        "first_bytes": dict(Counter(bytes(b[:40]).decode(errors="replace") for (h, d, e, b) in res)),
        "held_median_s": round(pct(held, 50), 2), "held_p95_s": round(pct(held, 95), 2),
        "held_min_s": round(min(held), 2), "held_max_s": round(max(held), 2),
        "closed_immediately_lt1s": sum(1 for d in held if d < 1),
        "held_ge1s_n": sum(1 for d in held if d >= 1),
        "held_ge1s_median_s": round(pct([d for d in held if d >= 1], 50), 2),
        "legit_timeline_per_2s(healthz_ok,exchange_ok,attempts_each)": [
            (round(a), sum(1 for (t,k,ok,d,e) in log if k=="healthz" and ok and t0+a<=t<t0+a+2),
             sum(1 for (t,k,ok,d,e) in log if k=="exchange" and ok and t0+a<=t<t0+a+2),
             sum(1 for (t,k,ok,d,e) in log if k=="healthz" and t0+a<=t<t0+a+2)) for a in range(0, 22, 2)],
        "all_closed_after_s": round(tclosed - t0, 2),
        "max_server_fds": max(f for _, f in fdsamples),
        "legit_first12s_healthz": rate(log, "healthz", t0, t0 + 12),
        "legit_first12s_exchange": rate(log, "exchange", t0, t0 + 12),
        "legit_10s_after_close_healthz": rate(log, "healthz", tclosed, tclosed + 10),
        "legit_10s_after_close_exchange": rate(log, "exchange", tclosed, tclosed + 10),
        "legit_errors_first12s": errs(log, t0, t0 + 12),
    }
    print(json.dumps(out, indent=1))

asyncio.run(main())
