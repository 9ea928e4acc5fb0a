# minimal HTTP/1.1 keep-alive client (stdlib asyncio)
import asyncio, json

class Conn:
    def __init__(self, host, port, src=None):
        self.host, self.port, self.src = host, port, src
        self.r = self.w = None
    async def open(self):
        kw = {}
        if self.src:
            kw['local_addr'] = (self.src, 0)
        self.r, self.w = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, **kw), 10)
    async def req(self, method, path, body=None, token=None, timeout=30):
        if self.w is None:
            await self.open()
        data = b'' if body is None else json.dumps(body).encode()
        h = f'{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n'
        if token:
            h += f'Authorization: Bearer {token}\r\n'
        if body is not None:
            h += 'Content-Type: application/json\r\n'
        h += f'Content-Length: {len(data)}\r\n\r\n'
        self.w.write(h.encode() + data)
        try:
            return await asyncio.wait_for(self._resp(), timeout)
        except Exception:
            self.close(); raise
    async def _resp(self):
        head = await self.r.readuntil(b'\r\n\r\n')
        lines = head.decode('latin1').split('\r\n')
        status = int(lines[0].split()[1])
        hd = {}
        for l in lines[1:]:
            if ':' in l:
                k, v = l.split(':', 1); hd[k.strip().lower()] = v.strip()
        if 'content-length' in hd:
            body = await self.r.readexactly(int(hd['content-length']))
        elif hd.get('transfer-encoding', '').lower() == 'chunked':
            body = b''
            while True:
                n = int((await self.r.readline()).strip().split(b';')[0], 16)
                if n == 0:
                    await self.r.readline(); break
                body += await self.r.readexactly(n); await self.r.readexactly(2)
        else:
            body = b''
        if hd.get('connection', '').lower() == 'close':
            self.close()
        return status, body
    def close(self):
        if self.w:
            try: self.w.close()
            except Exception: pass
        self.r = self.w = None
