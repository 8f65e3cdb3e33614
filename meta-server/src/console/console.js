// The operator console: reads and drives the cluster through the meta node's admin API
// (/admin/v1/...), the same calls registryctl makes. With auth on, every call is signed in
// the browser with the admin key (HMAC-SHA256 through WebCrypto), exactly as
// registry_common::auth::request_message describes; the key never leaves this tab.
'use strict';

(() => {
  const POLL_MS = 2000;
  // Points kept for the push chart: 3 minutes at one poll every 2 s.
  const HISTORY = 90;
  const STORE_KEY = 'registry.console.key';
  const MIN_SECRET_BYTES = 16;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // One colour per data server in the slot picture (then repeated, with a pattern).
  const PALETTE = [
    '#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948',
    '#b07aa1', '#ff9da7', '#9c755f', '#17becf', '#bcbd22', '#8c564b',
  ];
  const UNASSIGNED = '#d0d4da';

  const state = {
    cred: null, // { keyId, secret, key: CryptoKey }
    status: null,
    slots: null,
    slotsEpoch: -1,
    history: [],
    authNeeded: false,
    timer: null,
    pollSeq: 0,
    confirmAction: null,
    errors: new Map(), // source -> ApiError
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM helpers

  // el('td', { class: 'num', title: 'x' }, 'text', otherNode)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      node.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function badge(text, kind, title) {
    return el('span', { class: `badge ${kind}`, title }, text);
  }

  // ---------------------------------------------------------------- formatting

  function fmtMs(ms) {
    if (typeof ms !== 'number') return '—';
    return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  function fmtRate(x) {
    return typeof x === 'number' ? x.toFixed(x < 10 ? 1 : 0) : '—';
  }

  // Versions are hybrid clocks (wall ms << 20 | sequence), beyond what a JS number holds
  // exactly: they are kept as the decimal strings of the JSON text (see parseJson).
  function fmtVersion(v) {
    return v === null || v === undefined ? '—' : String(v);
  }

  function versionTime(v) {
    try {
      const ms = Number(BigInt(String(v)) >> 20n);
      return ms > 0 ? new Date(ms).toISOString() : undefined;
    } catch (_) {
      return undefined;
    }
  }

  function sameVersion(a, b) {
    return a !== null && a !== undefined && b !== null && b !== undefined
      && String(a) === String(b);
  }

  function versionCell(v) {
    return el('td', { class: 'num', title: v ? versionTime(v) : undefined }, fmtVersion(v));
  }

  // JSON.parse that keeps integers beyond 2^53 exact, as strings, where the browser gives
  // revivers the source text; elsewhere they are rounded (display only).
  function parseJson(text) {
    return JSON.parse(text, (key, value, context) => {
      if (typeof value === 'number' && !Number.isSafeInteger(value)
        && context && typeof context.source === 'string' && /^-?\d+$/.test(context.source)) {
        return context.source;
      }
      return value;
    });
  }

  // ---------------------------------------------------------------- signing

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function canSign() {
    return window.isSecureContext && window.crypto && window.crypto.subtle;
  }

  async function importCredential(keyId, secret) {
    const trimmed = secret.trim();
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(keyId)) {
      throw new ApiError('invalid_argument',
        'a key id is 1 to 128 letters, digits, `-`, `_` or `.`');
    }
    const raw = new TextEncoder().encode(trimmed);
    if (raw.length < MIN_SECRET_BYTES) {
      throw new ApiError('invalid_argument',
        `a secret is at least ${MIN_SECRET_BYTES} bytes`);
    }
    if (!canSign()) {
      throw new ApiError('unavailable', 'this page cannot sign: the browser offers WebCrypto '
        + 'only to secure pages (https, or http on localhost); open the console over TLS or '
        + 'through a tunnel to localhost');
    }
    const key = await crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' },
      false, ['sign']);
    return { keyId, secret: trimmed, key };
  }

  // The four headers of a signed request: what registry_common::auth::Credential::sign_request
  // produces. The signature covers the method, the path and query as sent, the time, a nonce
  // and the SHA-256 of the body.
  async function signedHeaders(cred, method, target, body) {
    const enc = new TextEncoder();
    const timestamp = String(Date.now());
    const nonce = hex(crypto.getRandomValues(new Uint8Array(16)));
    const bodyHash = hex(new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(body))));
    const message = ['REGISTRY-HMAC-SHA256', cred.keyId, method.toUpperCase(), target,
      timestamp, nonce, bodyHash].join('\n');
    const signature = hex(new Uint8Array(
      await crypto.subtle.sign('HMAC', cred.key, enc.encode(message))));
    return {
      'x-registry-key': cred.keyId,
      'x-registry-date': timestamp,
      'x-registry-nonce': nonce,
      'x-registry-signature': signature,
    };
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(code, message, redirect, status) {
      super(message);
      this.code = code;
      this.redirect = redirect;
      this.status = status;
    }
  }

  function encodePart(s) {
    return encodeURIComponent(s).replace(/[!'()*]/g,
      (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  }

  async function api(method, path, payload) {
    // Sign what the browser will send: the URL as parsed, path and query.
    const url = new URL(path, window.location.origin);
    const target = url.pathname + url.search;
    const body = payload === undefined ? '' : JSON.stringify(payload);
    const headers = {};
    if (payload !== undefined) headers['content-type'] = 'application/json';
    if (state.cred) Object.assign(headers, await signedHeaders(state.cred, method, target, body));
    let resp;
    try {
      resp = await fetch(url, {
        method,
        headers,
        body: payload === undefined ? undefined : body,
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      throw new ApiError('unavailable', `cannot reach ${window.location.host}: ${e.message}`);
    }
    const text = await resp.text();
    let json = null;
    try {
      json = text ? parseJson(text) : null;
    } catch (_) {
      json = null;
    }
    if (!resp.ok) {
      if (json && typeof json.code === 'string') {
        throw new ApiError(json.code, String(json.message || ''), json.redirect, resp.status);
      }
      throw new ApiError(`http_${resp.status}`, text.slice(0, 200) || resp.statusText,
        undefined, resp.status);
    }
    return json;
  }

  // ---------------------------------------------------------------- errors and banners

  function showError(source, err) {
    const e = err instanceof ApiError ? err : new ApiError('internal', String(err && err.message || err));
    state.errors.set(source, e);
    renderError();
  }

  function clearError(source) {
    if (state.errors.delete(source)) renderError();
  }

  function renderError() {
    const box = $('error');
    const last = Array.from(state.errors.values()).pop();
    if (!last) {
      box.hidden = true;
      box.removeAttribute('data-code');
      return;
    }
    box.hidden = false;
    box.dataset.code = last.code;
    $('error-text').textContent = `${last.code}: ${last.message}`;
    const link = $('error-link');
    if (last.code === 'not_leader' && last.redirect) {
      link.href = `${window.location.protocol}//${last.redirect}/console/`;
      link.textContent = 'open the leader\'s console';
      link.hidden = false;
    } else if (last.code === 'not_leader') {
      link.hidden = true;
      $('error-text').textContent += ' (no leader known yet; retry shortly)';
    } else {
      link.hidden = true;
    }
  }

  function ask(text, action) {
    state.confirmAction = action;
    $('confirm-text').textContent = text;
    $('confirm').hidden = false;
    $('confirm-yes').focus();
  }

  function settleConfirm(yes) {
    const action = state.confirmAction;
    state.confirmAction = null;
    $('confirm').hidden = true;
    if (yes && action) action();
  }

  // ---------------------------------------------------------------- sign-in

  function renderIdentity() {
    const signedIn = !!state.cred;
    $('signed-in').hidden = !signedIn;
    $('sign-out').hidden = !signedIn;
    $('signed-in').textContent = signedIn ? `signed in as ${state.cred.keyId}` : '';
    $('signin').hidden = signedIn || !state.authNeeded;
    if (!signedIn && state.authNeeded && !canSign()) {
      $('signin-note').textContent = 'This cluster needs an admin access key, and this page '
        + 'cannot sign with one: browsers offer WebCrypto only to secure pages. Open the '
        + 'console over https (servers with --tls-cert), or on localhost (an SSH tunnel).';
      $('sign-in').disabled = true;
    }
  }

  async function signIn(event) {
    event.preventDefault();
    let keyId = $('key-id').value.trim();
    let secret = $('key-secret').value;
    // A whole key file pasted in the first field: KEY_ID:SECRET.
    if (!secret && keyId.includes(':')) {
      const at = keyId.indexOf(':');
      secret = keyId.slice(at + 1);
      keyId = keyId.slice(0, at).trim();
    }
    try {
      const cred = await importCredential(keyId, secret);
      state.cred = cred;
      await api('GET', '/admin/v1/status');
    } catch (e) {
      state.cred = null;
      showError('signin', e);
      renderIdentity();
      return;
    }
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify({ keyId, secret: state.cred.secret }));
    } catch (_) {
      // Storage refused (private mode): the key lasts until the page is reloaded.
    }
    $('key-secret').value = '';
    $('key-id').value = '';
    clearError('signin');
    state.authNeeded = false;
    renderIdentity();
    poll();
  }

  function signOut() {
    state.cred = null;
    try {
      sessionStorage.removeItem(STORE_KEY);
    } catch (_) {
      // nothing stored
    }
    state.authNeeded = true;
    state.status = null;
    renderIdentity();
    poll();
  }

  async function restoreCredential() {
    let saved = null;
    try {
      saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
    } catch (_) {
      saved = null;
    }
    if (!saved || typeof saved.keyId !== 'string' || typeof saved.secret !== 'string') return;
    try {
      state.cred = await importCredential(saved.keyId, saved.secret);
    } catch (_) {
      state.cred = null;
    }
  }

  // ---------------------------------------------------------------- polling

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(poll, POLL_MS);
  }

  async function poll() {
    clearTimeout(state.timer);
    // An action polls at once; an answer overtaken by a later poll's is dropped.
    const seq = ++state.pollSeq;
    try {
      const status = await api('GET', '/admin/v1/status');
      let slots = state.slots;
      if (status.epoch !== state.slotsEpoch || !slots) {
        slots = await api('GET', '/admin/v1/slots');
      }
      if (seq !== state.pollSeq) return;
      state.slots = slots;
      state.slotsEpoch = status.epoch;
      state.status = status;
      state.authNeeded = false;
      clearError('poll');
      record(status);
      render();
    } catch (e) {
      if (seq !== state.pollSeq) return;
      if (e.code === 'unauthenticated' || e.code === 'forbidden') {
        if (!state.cred) {
          // Auth is on and we hold no key: ask for one, no error banner for that.
          state.authNeeded = true;
          renderIdentity();
          $('summary').textContent = 'sign in to see the cluster';
          return;
        }
      }
      showError('poll', e);
    }
    renderIdentity();
    schedule();
  }

  function record(status) {
    const sessions = status.members.filter((m) => m.session);
    const latency = (field) => {
      const values = sessions.map((m) => m.session[field]).filter((v) => typeof v === 'number');
      return values.length ? Math.max(...values) : null;
    };
    state.history.push({
      at: Date.now(),
      rate: status.totals.pushesPerSec,
      p50: latency('pushLatencyP50Ms'),
      p99: latency('pushLatencyP99Ms'),
    });
    // Actions poll at once too: bound the points by count and by the chart's time span.
    const since = Date.now() - HISTORY * POLL_MS;
    state.history = state.history.filter((p) => p.at >= since).slice(-2 * HISTORY);
  }

  // ---------------------------------------------------------------- the leader

  // Writes go through the meta leader. A follower answers them 421 not_leader, and browsers
  // repeat a request answered 421 (Chromium does, once, on a fresh connection): the repeat
  // carries the same nonce and is refused as a replay, hiding the answer. So the page sends
  // writes only while the node it was loaded from says it leads, and links to the leader's
  // console otherwise.
  function isLeader(s) {
    return !!s && s.leader !== null && s.leader !== undefined && s.leader === s.nodeId;
  }

  function leaderConsole(s) {
    const node = s && s.metaNodes.find((n) => n.nodeId === s.leader);
    return node ? `${window.location.protocol}//${node.addr}/console/` : null;
  }

  // ---------------------------------------------------------------- rendering

  function render() {
    const s = state.status;
    if (!s) return;
    renderSummary(s);
    renderProblems(s);
    const colours = colourMap(s);
    renderMetaNodes(s);
    renderDataServers(s, colours);
    renderSessionServers(s);
    renderSlots(s, colours);
    renderChart();
    renderActions(s);
  }

  function renderSummary(s) {
    const answered = s.metaNodes.find((n) => n.nodeId === s.nodeId);
    const role = s.leader === s.nodeId ? 'leader' : 'follower';
    const parts = [
      `meta node ${s.nodeId} (${role})${answered ? ` at ${answered.addr}` : ''}`,
      s.leader === null || s.leader === undefined ? 'no leader' : `leader ${s.leader}`,
      `term ${s.term}`,
      `epoch ${s.epoch}`,
      `pushes ${s.pushEnabled ? 'on' : 'off'}`,
    ];
    $('summary').textContent = parts.join(' · ');
    const t = s.totals;
    $('totals').textContent = `${t.connections} connections · ${t.publishers} publishers · `
      + `${t.subscribers} subscribers · ${fmtRate(t.pushesPerSec)} pushes/s`;
  }

  function renderProblems(s) {
    const list = $('problems');
    if (!s.problems.length) {
      list.replaceChildren(el('li', { class: 'ok' }, 'none: every server answers and is ready'));
    } else {
      list.replaceChildren(...s.problems.map((p) => el('li', { class: 'bad', 'data-testid': 'problem' }, p)));
    }
  }

  function health(m) {
    if (!m.reachable) return badge('unreachable', 'bad', 'did not answer its status probe');
    const why = (m.data && m.data.notReady) || (m.session && m.session.notReady) || undefined;
    if (m.draining) return badge('draining', 'warn', why);
    return m.ready ? badge('ready', 'ok') : badge('not ready', 'warn', why);
  }

  function leaseCell(m) {
    const age = m.leaseAgeMs;
    const kind = typeof age !== 'number' ? '' : age > 5000 ? 'bad' : age > 2500 ? 'warn' : '';
    return el('td', {
      class: `num ${kind}`,
      title: typeof age === 'number' ? undefined : 'lease ages are known to the leader only',
    }, fmtMs(age));
  }

  function renderMetaNodes(s) {
    const rows = s.metaNodes.map((n) => el('tr', {
      'data-testid': 'meta-node', 'data-node-id': n.nodeId, 'data-leader': n.leader,
    },
    el('td', {}, String(n.nodeId), n.leader ? el('span', {
      class: 'leader', 'data-testid': 'leader-mark', title: 'leader',
    }, ' ★ leader') : null),
    el('td', { class: 'mono' }, n.addr),
    el('td', {}, n.voter ? 'voter' : 'learner'),
    el('td', {}, n.reachable ? badge('reachable', 'ok') : badge('unreachable', 'bad'))));
    fill($('meta-nodes').tBodies[0], rows);
  }

  function renderDataServers(s, colours) {
    const rows = s.members.filter((m) => m.role === 'data').map((m) => {
      const d = m.data || {};
      const button = el('button', {
        type: 'button', 'data-testid': m.draining ? 'undrain' : 'drain', 'data-id': m.id,
      }, m.draining ? 'Undrain' : 'Drain');
      button.disabled = !isLeader(s);
      button.addEventListener('click', () => drain(m, !m.draining));
      return el('tr', { 'data-testid': 'member-row', 'data-role': 'data', 'data-member-id': m.id },
        el('td', {}, swatch(colours.get(m.id))),
        el('td', { class: 'mono' }, m.id),
        el('td', { class: 'mono' }, m.addr),
        el('td', {}, m.zone || '—'),
        el('td', {}, health(m)),
        leaseCell(m),
        el('td', { class: 'num' }, d.primarySlots ?? '—'),
        el('td', { class: 'num' }, d.replicaSlots ?? '—'),
        el('td', { class: 'num' }, d.syncingSlots ?? '—'),
        el('td', { class: 'num' }, d.dataInfoIds ?? '—'),
        el('td', { class: 'num' }, d.primaryPublishers ?? '—'),
        el('td', {}, button));
    });
    fill($('data-servers').tBodies[0], rows.length ? rows : [emptyRow(12, 'no data server')]);
  }

  function renderSessionServers(s) {
    const rows = s.members.filter((m) => m.role === 'session').map((m) => {
      const x = m.session || {};
      return el('tr', { 'data-testid': 'member-row', 'data-role': 'session', 'data-member-id': m.id },
        el('td', { class: 'mono' }, m.id),
        el('td', { class: 'mono' }, m.addr),
        el('td', {}, m.zone || '—'),
        el('td', {}, health(m)),
        leaseCell(m),
        el('td', { class: 'num' }, x.connections ?? '—'),
        el('td', { class: 'num' }, x.publishers ?? '—'),
        el('td', { class: 'num' }, x.subscribers ?? '—'),
        el('td', { class: 'num' }, fmtRate(x.pushesPerSec)),
        el('td', {}, m.session ? (x.pushEnabled ? 'yes' : badge('held', 'warn')) : '—'),
        el('td', { class: 'num' }, x.forwardPending ?? '—'),
        el('td', { class: 'num' }, x.outboxFrames ?? '—'));
    });
    fill($('session-servers').tBodies[0], rows.length ? rows : [emptyRow(12, 'no session server')]);
  }

  function emptyRow(span, text) {
    return el('tr', {}, el('td', { colspan: span, class: 'muted' }, text));
  }

  function swatch(colour) {
    return el('span', { class: 'swatch', 'data-colour': colour || UNASSIGNED },
      svgSwatch(colour || UNASSIGNED));
  }

  function svgSwatch(colour) {
    return svg('svg', { width: 12, height: 12, viewBox: '0 0 12 12', 'aria-hidden': 'true' },
      svg('rect', { width: 12, height: 12, rx: 2, fill: colour }));
  }

  // Data server id -> colour, in the order the slot summary lists them (by id).
  function colourMap(s) {
    const map = new Map();
    s.slots.perServer.forEach((p, i) => map.set(p.id, PALETTE[i % PALETTE.length]));
    return map;
  }

  function renderSlots(s, colours) {
    const table = state.slots && Array.isArray(state.slots.slots) ? state.slots.slots : [];
    const n = table.length;
    const sum = s.slots;
    $('slot-summary').textContent = `${sum.slotCount} slots · ${sum.withoutPrimary} without a `
      + `primary · ${sum.missingCopies} copies missing · coloured by primary`;
    const cols = Math.max(1, Math.ceil(Math.sqrt(n)));
    const rows = Math.max(1, Math.ceil(n / cols));
    const cell = 18;
    const gap = 2;
    const grid = $('slot-grid');
    grid.setAttribute('viewBox', `0 0 ${cols * (cell + gap)} ${rows * (cell + gap)}`);
    grid.dataset.slotCount = String(n);
    const addr = new Map(s.members.map((m) => [m.id, m.addr]));
    const cells = table.map((a, slot) => {
      const primary = a.primary || '';
      const replicas = (a.replicas || []).map((r) => addr.get(r) || r);
      const colour = primary ? (colours.get(primary) || UNASSIGNED) : UNASSIGNED;
      const tip = primary
        ? `slot ${slot}: primary ${addr.get(primary) || primary}`
          + (replicas.length ? `, replicas ${replicas.join(', ')}` : '')
        : `slot ${slot}: no primary`;
      return svg('rect', {
        x: (slot % cols) * (cell + gap),
        y: Math.floor(slot / cols) * (cell + gap),
        width: cell,
        height: cell,
        rx: 2,
        fill: colour,
        class: primary ? 'slot' : 'slot none',
        'data-testid': 'slot-cell',
        'data-slot': slot,
        'data-primary': primary,
      }, svg('title', {}, tip));
    });
    grid.replaceChildren(...cells);
    const legend = sum.perServer.map((p) => el('li', { 'data-testid': 'legend-item', 'data-id': p.id },
      swatch(colours.get(p.id)),
      el('span', { class: 'mono' }, p.addr),
      el('span', { class: 'muted' }, ` ${p.primaries} primaries, ${p.replicas} replicas`)));
    if (table.some((a) => !a.primary)) {
      legend.push(el('li', {}, swatch(UNASSIGNED), el('span', {}, 'no primary')));
    }
    $('slot-legend').replaceChildren(...legend);
  }

  function renderChart() {
    const chart = $('push-chart');
    const w = 600;
    const h = 180;
    const pad = { left: 44, right: 48, top: 10, bottom: 22 };
    const pts = state.history;
    const span = HISTORY * POLL_MS;
    const end = pts.length ? pts[pts.length - 1].at : Date.now();
    const x = (p) => pad.left + (1 - (end - p.at) / span) * (w - pad.left - pad.right);
    const maxRate = niceMax(Math.max(1, ...pts.map((p) => p.rate || 0)));
    const lat = pts.flatMap((p) => [p.p50, p.p99]).filter((v) => typeof v === 'number');
    const hasLatency = lat.length > 0;
    const maxLat = niceMax(Math.max(1, ...lat));
    const yRate = (v) => h - pad.bottom - (v / maxRate) * (h - pad.top - pad.bottom);
    const yLat = (v) => h - pad.bottom - (v / maxLat) * (h - pad.top - pad.bottom);
    const line = (field, y) => pts
      .filter((p) => typeof p[field] === 'number' && end - p.at <= span)
      .map((p) => `${x(p).toFixed(1)},${y(p[field]).toFixed(1)}`)
      .join(' ');
    const nodes = [
      svg('line', { x1: pad.left, y1: h - pad.bottom, x2: w - pad.right, y2: h - pad.bottom, class: 'axis' }),
      svg('line', { x1: pad.left, y1: pad.top, x2: pad.left, y2: h - pad.bottom, class: 'axis' }),
      svg('line', { x1: pad.left, y1: pad.top, x2: w - pad.right, y2: pad.top, class: 'grid' }),
      svg('text', { x: pad.left - 4, y: pad.top + 4, class: 'tick', 'text-anchor': 'end' }, `${maxRate}/s`),
      svg('text', { x: pad.left - 4, y: h - pad.bottom, class: 'tick', 'text-anchor': 'end' }, '0'),
      svg('text', { x: pad.left, y: h - 6, class: 'tick' }, `${Math.round(span / 60000)} min ago`),
      svg('text', { x: w - pad.right, y: h - 6, class: 'tick', 'text-anchor': 'end' }, 'now'),
      svg('polyline', { points: line('rate', yRate), class: 'rate', id: 'push-rate-line', 'data-testid': 'push-rate-line' }),
    ];
    if (hasLatency) {
      nodes.push(
        svg('line', { x1: w - pad.right, y1: pad.top, x2: w - pad.right, y2: h - pad.bottom, class: 'axis' }),
        svg('text', { x: w - pad.right + 4, y: pad.top + 4, class: 'tick' }, `${maxLat} ms`),
        svg('text', { x: w - pad.right + 4, y: h - pad.bottom, class: 'tick' }, '0'),
        svg('polyline', { points: line('p50', yLat), class: 'p50', 'data-testid': 'latency-p50-line' }),
        svg('polyline', { points: line('p99', yLat), class: 'p99', 'data-testid': 'latency-p99-line' }));
    }
    chart.replaceChildren(...nodes);
    chart.dataset.points = String(pts.length);
    const last = pts[pts.length - 1];
    let now = last ? `${fmtRate(last.rate)} pushes/s` : '';
    if (last && typeof last.p99 === 'number') {
      now += ` · push latency p50 ${fmtRate(last.p50)} ms, p99 ${fmtRate(last.p99)} ms (slowest session)`;
    }
    $('push-now').textContent = now;
    const legend = [el('li', {}, el('span', { class: 'key rate' }), 'pushes/s (all sessions)')];
    if (hasLatency) {
      legend.push(el('li', {}, el('span', { class: 'key p50' }), 'p50 latency, ms'),
        el('li', {}, el('span', { class: 'key p99' }), 'p99 latency, ms'));
    }
    $('chart-legend').replaceChildren(...legend);
  }

  // 1, 2, 5, 10, 20, 50 ... at or above v.
  function niceMax(v) {
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function renderActions(s) {
    const st = $('push-state');
    st.textContent = s.pushEnabled ? 'on' : 'off';
    st.dataset.state = s.pushEnabled ? 'on' : 'off';
    st.className = s.pushEnabled ? 'ok' : 'bad';
    const leads = isLeader(s);
    const note = $('leader-note');
    note.hidden = leads;
    const link = $('leader-link');
    const target = leaderConsole(s);
    if (!leads) {
      $('leader-note-text').textContent = target
        ? `Meta node ${s.nodeId} is a follower: changes go through the leader, node ${s.leader}. `
        : `Meta node ${s.nodeId} knows no leader yet: changes wait for one. `;
      link.hidden = !target;
      if (target) {
        link.href = target;
        link.textContent = 'Open the leader\'s console';
      }
    }
    $('push-off').disabled = !leads || !s.pushEnabled;
    $('push-on').disabled = !leads || s.pushEnabled;
    $('client-off').disabled = !leads;
    $('client-on').disabled = !leads;
    const items = s.clientsOff.map((a) => {
      const back = el('button', { type: 'button', 'data-testid': 'client-back', 'data-address': a }, 'Let back');
      back.disabled = !leads;
      back.addEventListener('click', () => clientSwitch(a, true));
      return el('li', { 'data-testid': 'client-off', 'data-address': a }, el('span', { class: 'mono' }, a), ' ', back);
    });
    $('clients-off').replaceChildren(...(items.length ? items : [el('li', { class: 'muted' }, 'no client is off')]));
  }

  // ---------------------------------------------------------------- service search

  async function searchService(event) {
    event.preventDefault();
    const dataId = $('service-data-id').value.trim();
    if (!dataId) return;
    const group = $('service-group').value.trim();
    const instance = $('service-instance').value.trim();
    let path = `/admin/v1/services/${encodePart(dataId)}`;
    const params = [];
    if (group) params.push(`group=${encodePart(group)}`);
    if (instance) params.push(`instanceId=${encodePart(instance)}`);
    if (params.length) path += `?${params.join('&')}`;
    $('service-search').disabled = true;
    try {
      const report = await api('GET', path);
      clearError('service');
      renderService(report);
    } catch (e) {
      $('service-result').hidden = true;
      showError('service', e);
    } finally {
      $('service-search').disabled = false;
    }
  }

  function renderService(r) {
    const addr = new Map((state.status ? state.status.members : []).map((m) => [m.id, m.addr]));
    const primary = r.holders.find((h) => h.placedAs === 'primary');
    $('service-title').textContent = `${r.dataInfoId} · slot ${r.slot} · ${r.publishers.length} `
      + `publishers · ${r.subscribers.length} subscribers · as of `
      + `${new Date().toLocaleTimeString()} (search again to refresh)`;
    fill($('service-holders').tBodies[0], r.holders.map((h) => el('tr', { 'data-testid': 'holder-row' },
      el('td', { class: 'mono', title: h.id }, h.addr),
      el('td', {}, h.placedAs),
      el('td', {}, h.role ? (h.role === h.placedAs ? h.role : badge(h.role, 'warn', 'differs from the table')) : badge('no answer', 'bad')),
      versionCell(h.version),
      el('td', { class: 'num' }, h.publishers ?? '—'))));
    const pubs = r.publishers.map((p) => el('tr', { 'data-testid': 'publisher-row', 'data-client-id': p.clientId },
      el('td', { class: 'mono', 'data-testid': 'publisher-data' }, p.data.join(', ')),
      el('td', { class: 'mono', title: p.session }, addr.get(p.session) || p.session),
      el('td', { class: 'mono' }, p.clientAddr || '—'),
      el('td', { class: 'mono' }, p.clientId),
      el('td', { class: 'mono' }, p.registId),
      el('td', {}, p.app || '—'),
      el('td', {}, p.zone || '—'),
      versionCell(p.version)));
    fill($('service-publishers').tBodies[0], pubs.length ? pubs : [emptyRow(8, 'no publisher')]);
    const subs = r.subscribers.map((s) => {
      const upToDate = primary && sameVersion(s.ackedVersion, primary.version);
      const acked = versionCell(s.ackedVersion);
      acked.className += upToDate ? ' ok' : ' warn';
      if (!upToDate) acked.title = `behind the primary's ${fmtVersion(primary && primary.version)}`;
      return el('tr', { 'data-testid': 'subscriber-row' },
        el('td', { class: 'mono', title: s.session }, addr.get(s.session) || s.session),
        el('td', { class: 'mono' }, s.clientAddr),
        el('td', { class: 'mono' }, s.clientId || '—'),
        el('td', { class: 'mono' }, s.registId),
        acked,
        versionCell(s.inflightVersion),
        versionCell(s.pendingVersion));
    });
    fill($('service-subscribers').tBodies[0], subs.length ? subs : [emptyRow(7, 'no subscriber')]);
    const un = $('service-unreachable');
    un.hidden = !r.unreachable.length;
    un.textContent = r.unreachable.length ? `no answer from ${r.unreachable.join(', ')}: their part is missing` : '';
    $('service-result').hidden = false;
  }

  // ---------------------------------------------------------------- actions

  async function act(what, path, payload) {
    $('action-result').textContent = `${what}…`;
    try {
      const r = await api('POST', path, payload);
      clearError('action');
      $('action-result').textContent = `${what}: done${r && r.epoch !== undefined ? ` (epoch ${r.epoch})` : ''}`;
    } catch (e) {
      $('action-result').textContent = `${what}: refused`;
      if (e.code === 'unauthenticated' && /nonce/.test(e.message)) {
        // The browser repeated a write this node answered 421 not_leader (see isLeader).
        e.message += ' (this node most likely stopped leading and the browser repeated its '
          + 'not_leader answer; the page shows the new leader at its next refresh)';
      }
      showError('action', e);
    }
    poll();
  }

  function pushSwitch(enabled) {
    const run = () => act(enabled ? 'switch pushes on' : 'switch pushes off', '/admin/v1/push', { enabled });
    if (enabled) run();
    else ask('Switch pushes off for the whole cluster? Subscribers get no change until they are on again.', run);
  }

  function clientSwitch(address, on) {
    const a = address.trim();
    if (!a) {
      showError('action', new ApiError('invalid_argument', 'enter a client IP address'));
      return;
    }
    const run = () => act(on ? `let ${a} back` : `take ${a} off`, on ? '/admin/v1/clients/on' : '/admin/v1/clients/off', { address: a });
    if (on) run();
    else ask(`Take client ${a} off? Its connections are closed and its publishers removed.`, run);
  }

  function drain(member, draining) {
    const run = () => act(`${draining ? 'drain' : 'undrain'} ${member.addr}`, '/admin/v1/drain', { ids: [member.id], draining });
    if (draining) ask(`Drain data server ${member.addr}? Every slot moves off it.`, run);
    else run();
  }

  // ---------------------------------------------------------------- start

  async function start() {
    $('signin-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', signOut);
    $('error-close').addEventListener('click', () => {
      state.errors.clear();
      renderError();
    });
    $('confirm-yes').addEventListener('click', () => settleConfirm(true));
    $('confirm-no').addEventListener('click', () => settleConfirm(false));
    $('service-form').addEventListener('submit', searchService);
    $('push-off').addEventListener('click', () => pushSwitch(false));
    $('push-on').addEventListener('click', () => pushSwitch(true));
    $('client-off').addEventListener('click', () => clientSwitch($('client-address').value, false));
    $('client-on').addEventListener('click', () => clientSwitch($('client-address').value, true));
    await restoreCredential();
    renderIdentity();
    document.body.dataset.ready = 'true';
    poll();
  }

  start();
})();
