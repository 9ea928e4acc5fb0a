// The admin console: signs in with the API key (kept in sessionStorage, so for this tab
// only), shows `/api/stats` live, searches sessions and publishes or disconnects, each action
// confirmed first.

import { Api, Unauthorized } from './api.js';
import { Chart, formatNumber } from './chart.js';

const KEY = 'switchboard-admin-key';
const WINDOW = 300; // samples, one a second: five minutes
const STALE_MS = 5000; // an instance silent this long is dropped from the table

const $ = (selector) => document.querySelector(selector);
let api = null;
let streaming = null;
let own = null; // the id of the instance this console's stream comes from
const instances = new Map(); // instance id -> { figures, seen }
let charts = null;

function setLive(state, text) {
  const live = $('#live');
  live.dataset.state = state;
  live.textContent = text;
}

function cell(row, text) {
  const td = document.createElement('td');
  td.textContent = text;
  row.append(td);
  return td;
}

function fillTable(body, rows) {
  body.replaceChildren(
    ...rows.map((values) => {
      const tr = document.createElement('tr');
      values.forEach((value) => cell(tr, value));
      return tr;
    }),
  );
}

// The figures of every instance heard from lately, summed (latency: the worst instance's);
// `sample`: add them to the charts (once a second, however many instances).
function render(sample) {
  const now = Date.now();
  for (const [id, entry] of instances) if (now - entry.seen > STALE_MS) instances.delete(id);
  const all = [...instances.values()].map((entry) => entry.figures);
  if (!all.length) return;
  const sum = (name) => all.reduce((total, f) => total + f[name], 0);
  const worst = (name) => {
    const known = all.map((f) => f[name]).filter((v) => v !== null);
    return known.length ? Math.max(...known) : null;
  };
  const total = {
    sessions: sum('sessions'),
    streams: sum('streams'),
    room_count: Math.max(...all.map((f) => f.room_count)),
    joins_per_second: sum('joins_per_second'),
    messages_per_second: sum('messages_per_second'),
    deliveries_per_second: sum('deliveries_per_second'),
    latency_p50_ms: worst('latency_p50_ms'),
    latency_p99_ms: worst('latency_p99_ms'),
    lagged: sum('lagged'),
  };
  for (const dd of document.querySelectorAll('[data-figure]')) {
    const value = total[dd.dataset.figure];
    dd.textContent = dd.dataset.figure.endsWith('_ms') && value !== null
      ? `${formatNumber(value)} ms`
      : formatNumber(value);
  }
  if (sample) {
    charts.sessions.push([total.sessions, total.streams]);
    charts.rates.push([total.messages_per_second, total.deliveries_per_second]);
    charts.latency.push([total.latency_p99_ms]);
  }
  fillTable($('#instances'), [...instances.entries()].map(([id, { figures }]) => [
    id, figures.state, formatNumber(figures.sessions), formatNumber(figures.streams),
  ]));
  // The whole hub's rooms, as the instance this console watches lists them (the others list
  // theirs only while a console watches them).
  const mine = instances.get(own);
  if (mine) fillTable($('#rooms'), mine.figures.rooms.map((r) => [r.room, formatNumber(r.members)]));
  const refusals = {};
  for (const f of all) {
    for (const [limit, count] of Object.entries(f.refusals)) {
      refusals[limit] = (refusals[limit] || 0) + count;
    }
  }
  fillTable($('#refusals'), Object.entries(refusals).map(([limit, n]) => [limit, formatNumber(n)]));
}

async function watch() {
  const controller = new AbortController();
  streaming = controller;
  while (streaming === controller) {
    try {
      setLive('connecting', 'connecting…');
      // Each second the stream's own instance comes first, then the others of a cluster.
      own = null;
      await api.stats((figures) => {
        own = own || figures.instance;
        instances.set(figures.instance, { figures, seen: Date.now() });
        setLive('live', 'live');
        render(figures.instance === own);
      }, controller.signal);
    } catch (error) {
      if (error instanceof Unauthorized) return signOut('The API key was refused.');
      if (controller.signal.aborted) return;
    }
    setLive('offline', 'offline, retrying');
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function signIn(key) {
  const candidate = new Api(key);
  try {
    await candidate.sessions('', 1);
  } catch (error) {
    $('#sign-in-error').textContent = error instanceof Unauthorized
      ? 'That key was refused.'
      : `Could not sign in: ${error.message}`;
    sessionStorage.removeItem(KEY);
    return;
  }
  sessionStorage.setItem(KEY, key);
  api = candidate;
  $('#sign-in-error').textContent = '';
  $('#sign-in').hidden = true;
  $('#console').hidden = false;
  $('#sign-out').hidden = false;
  watch();
  search();
}

function signOut(reason) {
  sessionStorage.removeItem(KEY);
  if (streaming) streaming.abort();
  streaming = null;
  api = null;
  instances.clear();
  $('#console').hidden = true;
  $('#sign-out').hidden = true;
  $('#sign-in').hidden = false;
  $('#key').value = '';
  $('#sign-in-error').textContent = reason || '';
  setLive('signed-out', 'signed out');
  $('#key').focus();
}

async function search() {
  const user = $('#search-user').value.trim();
  const text = $('#search-text').value.trim().toLowerCase();
  try {
    const page = await api.sessions(user, 500);
    const found = page.filter((s) => !text
      || s.name.toLowerCase().includes(text) || s.id.toLowerCase().includes(text));
    const body = $('#sessions');
    body.replaceChildren(...found.map((session) => {
      const tr = document.createElement('tr');
      tr.dataset.id = session.id;
      const name = document.createElement('bdi');
      name.textContent = session.name;
      cell(tr, '').append(name);
      cell(tr, session.id).className = 'id';
      cell(tr, session.user || '');
      const pick = document.createElement('button');
      pick.type = 'button';
      pick.textContent = 'Select';
      pick.setAttribute('aria-label', `Select ${session.name}`);
      pick.addEventListener('click', () => {
        $('#target-kind').value = 'session';
        $('#target').value = session.id;
        $('#message').focus();
      });
      cell(tr, '').append(pick);
      return tr;
    }));
    $('#search-note').textContent = `${found.length} session${found.length === 1 ? '' : 's'} found`;
  } catch (error) {
    if (error instanceof Unauthorized) signOut('The API key was refused.');
    else $('#search-note').textContent = `Search failed: ${error.message}`;
  }
}

// The target the action form names, and how to say it; null when it names none.
function target() {
  const kind = $('#target-kind').value;
  if (kind === 'everyone') return { to: 'everyone', words: 'everyone' };
  const value = $('#target').value.trim();
  if (!value) return null;
  return { to: { [kind]: value }, words: `${kind} ${value}` };
}

function message() {
  const raw = $('#message').value;
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

// Shows `question`; resolves true only when Confirm is chosen.
function confirmed(question) {
  const dialog = $('#confirm');
  $('#confirm-text').textContent = question;
  dialog.returnValue = '';
  dialog.showModal();
  $('#confirm-cancel').focus();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
}

async function act(kind) {
  const result = $('#action-result');
  const chosen = target();
  if (!chosen) {
    result.textContent = 'Name a session, a user or a room first.';
    $('#target').focus();
    return;
  }
  const question = kind === 'publish'
    ? `Publish this message to ${chosen.words}?`
    : `Disconnect ${chosen.words}? Their sessions end as if they had left.`;
  if (!(await confirmed(question))) {
    result.textContent = 'Cancelled.';
    return;
  }
  try {
    if (kind === 'publish') {
      const answer = await api.publish(chosen.to, message());
      result.textContent = `Published to ${answer.recipients} (refused: ${answer.refused}).`;
    } else {
      const answer = await api.disconnect(chosen.to);
      result.textContent = `Disconnected ${answer.disconnected}.`;
      search();
    }
  } catch (error) {
    if (error instanceof Unauthorized) signOut('The API key was refused.');
    else result.textContent = `Failed: ${error.message}`;
  }
}

function start() {
  charts = {
    sessions: new Chart($('#chart-sessions'), ['first', 'second'], WINDOW),
    rates: new Chart($('#chart-rates'), ['first', 'second'], WINDOW),
    latency: new Chart($('#chart-latency'), ['first'], WINDOW),
  };
  $('#sign-in').addEventListener('submit', (event) => {
    event.preventDefault();
    signIn($('#key').value);
  });
  $('#sign-out').addEventListener('click', () => signOut());
  $('#search').addEventListener('submit', (event) => {
    event.preventDefault();
    search();
  });
  $('#target-kind').addEventListener('change', () => {
    $('#target').disabled = $('#target-kind').value === 'everyone';
  });
  $('#publish').addEventListener('click', () => act('publish'));
  $('#disconnect').addEventListener('click', () => act('disconnect'));
  const kept = sessionStorage.getItem(KEY);
  if (kept) signIn(kept);
  else $('#key').focus();
}

start();
