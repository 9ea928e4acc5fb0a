"""Shared helpers: raw HTTP over asyncio, legitimate-client monitor, server RSS sampler."""
import asyncio, json, time, socket

HOST = "127.0.0.1"
PORT = 47180
LEGIT_SRC = "127.0.0.1"


async def http(method, path, body=None, headers=None, timeout=2.0, src=LEGIT_SRC):
    """One request on its own connection (Connection: close); returns (status, body_bytes)."""
    async def go():
        r, w = await asyncio.open_connection(HOST, PORT, local_addr=(src, 0))
        try:
            data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            h = {"Host": f"{HOST}:{PORT}", "Connection": "close"}
            if body is not None:
                h["Content-Type"] = "application/json"
                h["Content-Length"] = str(len(data))
            h.update(headers or {})
            head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
            w.write(head.encode() + data)
            await w.drain()
            resp = await r.read()
            status = int(resp.split(b" ", 2)[1])
            return status, resp.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in resp else b""
        finally:
            w.close()
    return await asyncio.wait_for(go(), timeout)


async def healthz():
    st, _ = await http("GET", "/healthz")
    return st == 200


async def exchange():
    """Two helos, attach A's stream, B sends /response to A, A must see event: client_response."""
    w = None
    try:
        st, b = await http("POST", "/helo", {"name": "legitA"})
        assert st == 201, st
        a = json.loads(b)
        st, b = await http("POST", "/helo", {"name": "legitB"})
        assert st == 201, st
        bb = json.loads(b)
        r, w = await asyncio.open_connection(HOST, PORT, local_addr=(LEGIT_SRC, 0))
        w.write(f"GET /events/{a['id']}?token={a['token']} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
        await w.drain()
        buf = b""
        while b"event: ready" not in buf:
            chunk = await r.read(65536)
            assert chunk, "stream EOF before ready"
            buf += chunk
        assert buf.startswith(b"HTTP/1.1 200"), buf[:40]
        st, _ = await http("POST", "/response", {"recipient": a["id"], "message": "ping"},
                           {"Authorization": f"Bearer {bb['token']}"})
        assert st in (200, 201, 202), st
        while b"event: client_response" not in buf:
            chunk = await r.read(65536)
            assert chunk, "stream EOF before client_response"
            buf += chunk
        # tidy up (best effort, not timed for success)
        for s in (a, bb):
            asyncio.ensure_future(_leave(s["token"]))
        return True
    finally:
        if w:
            w.close()


async def _leave(tok):
    try:
        await http("DELETE", "/session", headers={"Authorization": f"Bearer {tok}"}, timeout=2)
    except Exception:
        pass


async def _attempt(kind, fn, log):
    t = time.monotonic()
    ok, err = False, ""
    try:
        ok = bool(await asyncio.wait_for(fn(), 2.0))
    except Exception as e:  # timeout, refused, assertion
        err = f"{type(e).__name__}:{e}"[:80]
    log.append((t, kind, ok, time.monotonic() - t, err))


async def monitor(log, stop: asyncio.Event, period=0.25):
    """Every 250 ms launch (concurrently) one /healthz attempt and one full exchange, each bounded to 2 s."""
    tasks = []
    while not stop.is_set():
        tasks.append(asyncio.ensure_future(_attempt("healthz", healthz, log)))
        tasks.append(asyncio.ensure_future(_attempt("exchange", exchange, log)))
        try:
            await asyncio.wait_for(stop.wait(), period)
        except asyncio.TimeoutError:
            pass
    await asyncio.gather(*tasks, return_exceptions=True)


def rate(log, kind, t0, t1):
    xs = [ok for (t, k, ok, d, e) in log if k == kind and t0 <= t < t1]
    if not xs:
        return "n/a"
    return f"{sum(xs)}/{len(xs)} ({100.0*sum(xs)/len(xs):.0f}%)"


def errs(log, t0, t1):
    from collections import Counter
    c = Counter(e.split(":")[0] + ":" + e.split(":", 1)[1][:30] for (t, k, ok, d, e) in log if not ok and t0 <= t < t1)
    return dict(c.most_common(4))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def nfds(pid):
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
