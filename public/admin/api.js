// The server API as the console uses it: every call carries the API key, and `/api/stats` is
// read with fetch (EventSource cannot send an Authorization header) and split into events.

export class Unauthorized extends Error {}

export class Api {
  constructor(key) {
    this.key = key;
  }

  async call(method, path, body) {
    const headers = { authorization: `Bearer ${this.key}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
    if (response.status === 401) throw new Unauthorized('the API key was refused');
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      throw new Error(answer && answer.message ? answer.message : `HTTP ${response.status}`);
    }
    return answer;
  }

  sessions(user, limit) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (user) query.set('user', user);
    return this.call('GET', `/api/sessions?${query}`);
  }

  publish(to, message) {
    return this.call('POST', '/api/publish', { to, message });
  }

  disconnect(to) {
    return this.call('POST', '/api/disconnect', { to });
  }

  // Calls `onStats` with each `stats` event's data until `signal` aborts or the stream ends.
  async stats(onStats, signal) {
    const response = await fetch('/api/stats', {
      headers: { authorization: `Bearer ${this.key}` },
      cache: 'no-store',
      signal,
    });
    if (response.status === 401) throw new Unauthorized('the API key was refused');
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += value;
      let end;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const frame = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const lines = frame.split('\n');
        const event = lines.find((l) => l.startsWith('event:'));
        const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim());
        if (event && event.slice(6).trim() === 'stats' && data.length) {
          onStats(JSON.parse(data.join('\n')));
        }
      }
    }
  }
}
