// jnrelay donor page: live status and setup over the provisioning API.
// Plain script, no build step. It talks to /v1 on the same origin with
// "Authorization: Bearer <token>"; the token is kept in sessionStorage
// (this tab only) and forgotten on sign-out or when the relay refuses it.
'use strict';
(function () {
  const TOKEN_KEY = 'jnrelay-token';
  const POLL_MS = 2000;
  const NET_RETRIES_MS = [250, 1000]; // pauses before a failed GET is tried again
  const PLACEHOLDER = '********'; // a redacted secret; sent back, it keeps the secret
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let pollTimer = 0, inFlight = false, again = false;
  let cfg = null, etag = '', svcIndex = 0, configLoading = false;
  const rows = new Map(); // channel id -> <li>

  class APIError extends Error {
    constructor(status, doc) {
      super((doc && doc.message) || ('HTTP ' + status));
      this.status = status;
      this.doc = doc;
    }
  }

  async function api(method, path, body, headers) {
    const opts = { method, cache: 'no-store', credentials: 'omit',
      headers: Object.assign({ Authorization: 'Bearer ' + token }, headers || {}) };
    if (body !== undefined) opts.body = JSON.stringify(body);
    // A read that fails in the network (the phone changed networks, the
    // browser dropped its connections on an address change) is tried
    // again a few times; a write is never repeated behind the user's back.
    const tries = method === 'GET' ? NET_RETRIES_MS.length + 1 : 1;
    let res;
    for (let i = 0; ; i++) {
      try {
        res = await fetch(path, opts);
        break;
      } catch (e) {
        if (i + 1 >= tries) throw new APIError(0, { message: 'the relay cannot be reached' });
        await new Promise((r) => setTimeout(r, NET_RETRIES_MS[i]));
      }
    }
    let doc = null;
    if (res.status !== 204) {
      try { doc = await res.json(); } catch (e) { doc = null; }
    }
    if (res.status === 401) signedOut('The relay refused this token (it may have been rotated). Enter the current one.');
    if (!res.ok) throw new APIError(res.status, doc);
    return { doc, etag: res.headers.get('ETag') || '' };
  }

  // ---- formatting ----
  function bytes(n) {
    const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
    let i = 0;
    n = Number(n) || 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + ' ' + units[i];
  }
  function dur(s) {
    s = Math.max(0, Math.floor(Number(s) || 0));
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min';
    const h = Math.floor(m / 60);
    if (h < 48) return h + ' h ' + (m % 60) + ' min';
    return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
  }
  const num = (n) => (Number(n) || 0).toLocaleString('en');
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setStat(id, main, small) {
    const dd = $(id);
    dd.textContent = main;
    if (small) dd.appendChild(el('small', '', small));
  }
  function setLive(text, bad) {
    $('live').textContent = text;
    $('live').classList.toggle('bad', !!bad);
  }

  // ---- sign in / out ----
  function signedOut(msg) {
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(pollTimer);
    $('app').hidden = true;
    $('new-token').hidden = true;
    $('new-token-value').textContent = '';
    $('signout').hidden = true;
    $('login').hidden = false;
    $('token').value = '';
    $('token').setAttribute('aria-invalid', msg ? 'true' : 'false');
    $('token-err').textContent = msg || '';
    setLive('');
    $('token').focus();
    checkClaim();
  }

  // A relay nobody has claimed offers to be set up from here (see
  // provision/claim.go): one click gives this browser its token.
  async function checkClaim() {
    let claimed = true;
    try {
      const res = await fetch('/v1/claim', { cache: 'no-store', credentials: 'omit' });
      if (res.ok) claimed = !!(await res.json()).claimed;
    } catch (e) { /* unknown: offer nothing */ }
    $('claim').hidden = claimed || !!token;
  }

  async function claim() {
    $('claim-err').textContent = '';
    $('claim-btn').disabled = true;
    try {
      const res = await fetch('/v1/claim', { method: 'POST', cache: 'no-store', credentials: 'omit' });
      const doc = await res.json().catch(() => ({}));
      if (!res.ok || !doc.token) {
        $('claim-err').textContent = 'Could not set up the relay: ' + (doc.message || 'HTTP ' + res.status) + '.';
        checkClaim();
        return;
      }
      token = doc.token;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('claim').hidden = true;
      $('new-token-value').textContent = token;
      $('new-token').hidden = false;
      start();
    } catch (e) {
      $('claim-err').textContent = 'Could not set up the relay: it cannot be reached.';
    } finally {
      $('claim-btn').disabled = false;
    }
  }

  function start() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('signout').hidden = false;
    poll();
    loadConfig().catch(configError);
  }

  async function signIn(ev) {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (!t) {
      $('token-err').textContent = 'Enter the token.';
      return;
    }
    token = t;
    $('token-err').textContent = 'Checking…';
    try {
      await api('GET', '/v1/status');
    } catch (e) {
      if (e.status !== 401) {
        token = '';
        $('token-err').textContent = 'Could not sign in: ' + e.message + '.';
      }
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    $('token-err').textContent = '';
    start();
  }

  // ---- status ----
  async function poll() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    clearTimeout(pollTimer);
    try {
      const [st, ch] = await Promise.all([api('GET', '/v1/status'), api('GET', '/v1/channels')]);
      renderStatus(st.doc || {});
      renderChannels(ch.doc || []);
      if (usageDue(st.doc || {})) renderUsage((await api('GET', '/v1/usage')).doc || {});
      setLive('Live · ' + new Date().toLocaleTimeString('en-GB'));
      // The settings could not be loaded before: the relay answers
      // again, so load them now.
      if (cfg === null && !configLoading) loadConfig().catch(configError);
    } catch (e) {
      if (e.status !== 401) setLive('Cannot update: ' + e.message + ' (retrying)', true);
    } finally {
      inFlight = false;
    }
    if (!token) return;
    if (again) { again = false; poll(); return; }
    if (!document.hidden) pollTimer = setTimeout(poll, POLL_MS);
  }

  function renderStatus(s) {
    const ch = s.channels || {}, tr = s.traffic || {};
    // The built-in TURN server's allocations share the port range with
    // the channels; shown only while it runs.
    const turn = s.turn, allocations = ch.turn_allocations || 0;
    setStat('st-channels', num(ch.active) + ' / ' + num(ch.capacity), num((ch.capacity || 0) - (ch.active || 0) - allocations) + ' free');
    $('st-turn-row').hidden = !turn;
    if (turn) {
      setStat('st-turn', num(turn.allocations_live) + ' live', num(turn.allocations_total) + ' since start · ' +
        bytes((turn.bytes_to_peers || 0) + (turn.bytes_from_peers || 0)) + ' relayed');
    }
    const reach = {
      configured: 'as configured',
      public: 'reachable from the Internet',
      behind_nat: 'behind NAT: forward the relay ports on your router',
      port_mapped: 'behind NAT: the router forwards the ports it mapped',
      private_only: 'private address: only this network can use the relay',
      none: 'no network address yet',
    };
    setStat('st-address', s.public_address && s.reachability !== 'none' ? s.public_address : 'none yet', reach[s.reachability] || '');
    renderReachability(s.reachability_check);
    renderPortMapping(s.port_mapping);
    const u = s.usage || {};
    setStat('st-today', bytes(u.day_bytes), u.daily_quota_bytes ? 'of ' + bytes(u.daily_quota_bytes) + ' a day' : '');
    setStat('st-month', bytes(u.month_bytes), u.monthly_quota_bytes ? 'of ' + bytes(u.monthly_quota_bytes) + ' a month' : 'no quota');
    $('st-refusing').hidden = !u.refusing;
    $('st-refusing').textContent = u.refusing ? 'New calls are refused: ' + u.refusing + '.' : '';
    setStat('st-out', bytes(tr.bytes_local_to_remote), num(tr.packets_local_to_remote) + ' packets');
    setStat('st-in', bytes(tr.bytes_remote_to_local), num(tr.packets_remote_to_local) + ' packets');
    const drops = Object.entries(tr.dropped || {}).filter(([, n]) => n > 0);
    const total = drops.reduce((a, [, n]) => a + n, 0);
    setStat('st-drops', num(total), drops.length ? drops.map(([r, n]) => r.replace(/_/g, ' ') + ' ' + num(n)).join(' · ') : 'none');
    setStat('st-uptime', dur(s.uptime_seconds), s.version ? 'version ' + s.version : '');

    const list = $('sessions');
    list.replaceChildren();
    for (const x of s.sessions || []) {
      const li = el('li');
      li.appendChild(el('span', 'name', x.name));
      li.appendChild(el('span', 'state' + (x.state === 'online' ? ' online' : ''), x.state));
      const since = Date.parse(x.since);
      if (since > Date.UTC(2000, 0)) li.appendChild(el('span', 'muted', 'for ' + dur((Date.now() - since) / 1000)));
      li.appendChild(el('span', 'detail', (x.type === 'client' ? 'account' : 'component') + (x.address ? ' · ' + x.address : '')));
      if (x.last_error) li.appendChild(el('span', 'detail bad', 'Last error: ' + x.last_error));
      list.appendChild(li);
    }
    if (!list.children.length) list.appendChild(el('li', 'muted', 'No XMPP service is configured.'));
    renderDirectory(s.directory);
  }

  // ago is how long ago an RFC 3339 time was, or '' when it is unset.
  function ago(t) {
    const at = Date.parse(t || '');
    return at > Date.UTC(2000, 0) ? dur((Date.now() - at) / 1000) + ' ago' : '';
  }

  // renderDirectory shows the directories the relay publishes its item to
  // and those it reads relays from (docs/directory.md); the block is
  // hidden when none is configured.
  function renderDirectory(d) {
    $('dir-block').hidden = !d;
    if (!d) return;
    const states = {
      published: 'published', failing: 'failing', waiting: 'waiting for a session',
      unlisted: 'taken out (draining)', withdrawn: 'taken out',
    };
    const list = $('directories');
    list.replaceChildren();
    for (const p of d.publish || []) {
      const li = el('li');
      li.dataset.kind = 'publish';
      li.dataset.node = p.node;
      li.appendChild(el('span', 'name', 'Publishes to ' + p.node));
      li.appendChild(el('span', 'state' + (p.state === 'published' ? ' online' : ''), states[p.state] || p.state));
      const when = [];
      if (p.last_published) when.push('last published ' + ago(p.last_published) + (p.address ? ' as ' + p.address : ''));
      if (p.last_attempt && p.error) when.push('last tried ' + ago(p.last_attempt));
      if (when.length) li.appendChild(el('span', 'detail', when.join(' · ')));
      if (p.error) li.appendChild(el('span', 'detail bad', 'Last error: ' + p.error));
      list.appendChild(li);
    }
    for (const n of d.subscribe || []) {
      const li = el('li');
      li.dataset.kind = 'subscribe';
      li.dataset.node = n.node;
      li.appendChild(el('span', 'name', 'Reads ' + n.node));
      li.appendChild(el('span', 'state' + (n.subscribed_as ? ' online' : ''), num(n.relays) + (n.relays === 1 ? ' relay' : ' relays')));
      li.appendChild(el('span', 'detail', n.last_fetch ? 'fetched ' + ago(n.last_fetch) + (n.subscribed_as ? ' · notified as ' + n.subscribed_as : '')
        : 'not fetched yet'));
      if (n.error) li.appendChild(el('span', 'detail bad', 'Last error: ' + n.error));
      list.appendChild(li);
    }
    $('dir-summary').hidden = !d.subscribe;
    if (d.subscribe) {
      // Each relay is health-checked by a few trackers only; this one
      // checks its share (docs/directory.md).
      $('dir-summary').textContent = num(d.relays) + ' relays known, ' + num(d.listed) + ' listed to clients · checks the health of ' +
        num(d.probe_share) + (d.probe_failing ? ' (' + num(d.probe_failing) + ' failing)' : '') + ' · other trackers known: ' + num(d.trackers);
    }
  }

  // The self-test of inbound reachability: a word in the table, and what
  // it found with what to do next below it.
  function renderReachability(r) {
    $('st-reach-row').hidden = !r;
    $('st-reach-msg').hidden = !r || r.verdict === 'pending';
    if (!r) return;
    const words = {
      reachable: 'yes', not_reachable: 'no', cannot_tell: 'cannot tell', pending: 'checking…',
    };
    const when = Date.parse(r.checked_at);
    setStat('st-reach', words[r.verdict] || r.verdict, when ? 'checked ' + new Date(when).toLocaleTimeString('en-GB') : '');
    const msg = $('st-reach-msg');
    msg.textContent = r.summary + (r.advice ? ' ' + r.advice : '');
    msg.className = 'msg ' + ({ reachable: 'ok', not_reachable: 'bad' }[r.verdict] || 'warn');
  }

  // renderPortMapping shows what the router maps for the relay, by which
  // protocol, until when; or why it maps nothing.
  function renderPortMapping(pm) {
    $('st-portmap-row').hidden = !pm;
    if (!pm) return;
    const names = { pcp: 'PCP', 'nat-pmp': 'NAT-PMP', upnp: 'UPnP' };
    const maps = (pm.mappings || []).map((m) => m.transport.toUpperCase() + ' ' + m.ports + ' (' + m.purpose + ')' +
      (m.expires ? ' until ' + new Date(m.expires).toLocaleTimeString('en-GB') : ''));
    if (maps.length) {
      setStat('st-portmap', (names[pm.protocol] || pm.protocol) + ' at ' + (pm.external_address || '?'), maps.join(' · '));
    } else {
      setStat('st-portmap', 'none', pm.error ? 'The router maps nothing: ' + pm.error : 'asking the router…');
    }
  }

  function renderChannels(list) {
    const seen = new Set();
    for (const c of list) {
      seen.add(c.id);
      let li = rows.get(c.id);
      if (!li) {
        li = el('li');
        li.dataset.id = c.id;
        li.append(el('span', 'name'), killButton(c.id), el('span', 'detail'), el('span', 'detail'));
        rows.set(c.id, li);
        $('channels').appendChild(li);
      }
      const [name, , traffic, peers] = li.children;
      if (c.kind === 'turn') {
        name.textContent = 'TURN ' + c.relayed;
        traffic.textContent = 'for ' + dur(c.age_seconds) + ' · to peers ' + bytes(c.bytes_to_peers) +
          ' · from peers ' + bytes(c.bytes_from_peers) + ' · ' + num(c.peers) + (c.peers === 1 ? ' peer' : ' peers');
        peers.textContent = 'id ' + c.id + ' · ' + c.requester + (c.client ? ' from ' + c.client + ' (' + c.transport + ')' : '');
        continue;
      }
      name.textContent = 'Ports ' + c.localport + ' ↔ ' + c.remoteport;
      traffic.textContent = 'for ' + dur(c.age_seconds) + (c.idle_seconds >= 5 ? ' (idle ' + dur(c.idle_seconds) + ')' : '') +
        ' · local → remote ' + bytes(c.bytes_local_to_remote) + ' · remote → local ' + bytes(c.bytes_remote_to_local) +
        (c.max_kbps ? ' · cap ' + num(c.max_kbps) + ' kbit/s' : '');
      peers.textContent = 'id ' + c.id + (c.local_peer || c.remote_peer ? ' · peers ' + (c.local_peer || '–') + ', ' + (c.remote_peer || '–') : '');
    }
    for (const [id, li] of rows) {
      if (!seen.has(id)) { li.remove(); rows.delete(id); }
    }
    $('no-channels').hidden = rows.size > 0;
  }

  // ---- what the relay has given (drawn by charts.js) ----
  const USAGE_MAX_AGE_MS = 30000;
  const charts = window.jnrelayCharts;
  let usage = null, usageAt = 0, usageWidth = 0;

  // usageDue says when to fetch the history again: when it is 30 s old,
  // or when the status shows what it does not (more traffic or calls
  // today, more calls live than its current minute).
  function usageDue(s) {
    if (!usage || Date.now() - usageAt >= USAGE_MAX_AGE_MS) return true;
    const u = s.usage || {}, days = usage.days || [], today = days[days.length - 1] || {};
    if (u.day !== today.period || u.day_bytes !== today.bytes || u.day_calls !== today.calls) return true;
    const lm = usage.live_minutes || [], last = lm[lm.length - 1];
    const ch = s.channels || {};
    return (ch.active || 0) + (ch.turn_allocations || 0) > (last && last.minutes_ago === 0 ? last.max : -1);
  }

  function renderUsage(doc) {
    usage = doc;
    usageAt = Date.now();
    drawUsage();
  }

  const calls = (n) => num(n) + (n === 1 ? ' call' : ' calls');
  const localDate = (p) => { const [y, m, d] = p.split('-').map(Number); return new Date(y, m - 1, d || 1); };
  const dayLabel = (p) => localDate(p).toLocaleDateString('en-GB', { day: 'numeric', month: 'short' });
  const dayLong = (p) => localDate(p).toLocaleDateString('en-GB', { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric' });
  const monthLong = (p) => localDate(p).toLocaleDateString('en-GB', { month: 'long', year: 'numeric' });
  function monthLabel(p, i) {
    const d = localDate(p), m = d.toLocaleDateString('en-GB', { month: 'short' });
    return i === 0 || d.getMonth() === 0 ? m + ' ' + d.getFullYear() : m;
  }
  // An axis figure without trailing zeros: 2.5 MB, 3 MB.
  const axisBytes = (n) => bytes(n).replace(/(\.\d*?)0+ /, '$1 ').replace('. ', ' ');

  function drawUsage() {
    if (!usage || $('app').hidden) return;
    const width = $('chart-days').querySelector('.chart-panels').clientWidth;
    if (!width) return;
    usageWidth = width;
    const days = usage.days || [], months = usage.months || [];
    const month = months[months.length - 1] || {};
    const today = days[days.length - 1] || {};
    $('given-summary').textContent = 'Today: ' + bytes(today.bytes) + ' relayed, ' + calls(today.calls || 0) + ' served. ' +
      'This month: ' + bytes(month.bytes) + ', ' + calls(month.calls || 0) + '.';
    drawPeriods('chart-days', days, { unit: 'day', label: dayLabel, long: dayLong, minPx: 44, current: 'today' });
    drawPeriods('chart-months', months, { unit: 'month', label: monthLabel, long: monthLong, minPx: 52, current: 'this month' });
    drawLive(usage.live_minutes || []);
  }

  // drawPeriods draws data relayed and calls served per day or month: two
  // panels over the same periods, the current one highlighted.
  function drawPeriods(id, periods, k) {
    const fig = $(id), width = fig.querySelector('.chart-panels').clientWidth;
    const n = periods.length, every = charts.every(width, n, k.minPx);
    if (!n) return;
    const span = k.long(periods[0].period) + ' to ' + k.long(periods[n - 1].period);
    const most = (key) => periods.reduce((a, p) => ((p[key] || 0) > (a[key] || 0) ? p : a), periods[0]);
    // Both panels leave the same room for their axis, so a period's two
    // bars are one above the other.
    const left = Math.max(charts.axis(most('bytes').bytes || 0, axisBytes, false).left, charts.axis(most('calls').calls || 0, num, true).left);
    const panel = (key, title, fmt, axisFmt, whole, height) => {
      const top = most(key), cur = periods[n - 1];
      const desc = title + ' per ' + k.unit + ', ' + span + ': ' + (top[key] ? 'most ' + fmt(top[key]) + ' on ' + k.long(top.period) +
        ', ' : 'none, ') + k.current + ' ' + fmt(cur[key] || 0) + '.';
      return charts.bars({ width, height, title: title + ' per ' + k.unit, desc, every, whole, format: axisFmt, cls: key, left,
        bars: periods.map((p, i) => ({ key: p.period, label: k.label(p.period, i), value: p[key] || 0, current: i === n - 1,
          tip: k.long(p.period) + ': ' + fmt(p[key] || 0) })) });
    };
    fig.querySelector('.chart-panels').replaceChildren(
      el('p', 'chart-title', 'Data relayed'), panel('bytes', 'Data relayed', bytes, axisBytes, false, width < 500 ? 130 : 150),
      el('p', 'chart-title', 'Calls served'), panel('calls', 'Calls served', num, num, true, width < 500 ? 90 : 100));
    fig.querySelector('.chart-tables').replaceChildren(charts.table(span, [k.unit === 'day' ? 'Day' : 'Month', 'Data relayed', 'Calls served'],
      periods.slice().reverse().map((p) => [k.long(p.period), bytes(p.bytes), num(p.calls)])));
  }

  // drawLive draws the most calls live at once in each minute of the
  // last hour (minutes before relayd started have no bar).
  function drawLive(minutes) {
    const fig = $('chart-live'), width = fig.querySelector('.chart-panels').clientWidth;
    const byAgo = new Map(minutes.map((m) => [m.minutes_ago, m.max]));
    const bars = [];
    for (let ago = 59; ago >= 0; ago--) {
      const v = byAgo.has(ago) ? byAgo.get(ago) : null;
      bars.push({ key: String(ago), label: ago ? '−' + ago + ' min' : 'now', value: v, current: ago === 0,
        tip: (ago ? ago + ' min ago' : 'this minute') + ': ' + (v === null ? 'relayd not running yet' : v + ' live') });
    }
    const top = Math.max(0, ...minutes.map((m) => m.max)), now = byAgo.get(0) || 0;
    const desc = 'Most calls live at once, per minute of the last hour' + (minutes.length < 60 ? ' (relayd has run for ' + minutes.length + ' min)' : '') +
      ': at most ' + top + ', ' + now + ' this minute.';
    fig.querySelector('.chart-panels').replaceChildren(charts.bars({ width, height: width < 500 ? 110 : 120, title: 'Calls live at once', desc,
      every: 15, whole: true, format: num, cls: 'live', bars }));
    fig.querySelector('.chart-tables').replaceChildren(charts.table('Most calls live at once, per minute', ['Minute', 'Calls live'],
      minutes.slice().reverse().map((m) => [m.minutes_ago ? m.minutes_ago + ' min ago' : 'this minute', num(m.max)])));
  }

  // A kill button asks for a second tap, so a stray touch ends no call.
  function killButton(id) {
    const b = el('button', 'danger', 'End');
    b.type = 'button';
    b.setAttribute('aria-label', 'End channel ' + id);
    let timer = 0;
    const disarm = () => { b.classList.remove('armed'); b.textContent = 'End'; };
    b.addEventListener('click', async () => {
      if (!b.classList.contains('armed')) {
        b.classList.add('armed');
        b.textContent = 'Tap again to end';
        timer = setTimeout(disarm, 4000);
        return;
      }
      clearTimeout(timer);
      b.disabled = true;
      try {
        await api('DELETE', '/v1/channels/' + encodeURIComponent(id));
      } catch (e) {
        if (e.status !== 404) {
          b.disabled = false;
          disarm();
          setLive('Could not end the channel: ' + e.message, true);
          return;
        }
      }
      const li = rows.get(id);
      if (li) { li.remove(); rows.delete(id); }
      $('no-channels').hidden = rows.size > 0;
      poll();
    });
    return b;
  }

  // ---- setup ----
  const services = () => (cfg && cfg.xmpp) || [];
  const svcType = () => ($('svc-type-client').checked ? 'client' : 'component');
  const identity = (s) => (s.type === 'client' ? s.jid : s.domain) || '';

  async function loadConfig() {
    configLoading = true;
    try {
      const r = await api('GET', '/v1/config');
      cfg = r.doc;
      etag = r.etag;
    } finally {
      configLoading = false;
    }
    fillForm();
    if ($('form-msg').dataset.kind === 'load') $('form-msg').hidden = true;
  }

  function configError(e) {
    if (e.status === 401) return;
    showMsg('bad', 'Could not load the settings: ' + e.message + (cfg === null ? '. Trying again while the relay answers.' : '.'));
    $('form-msg').dataset.kind = 'load'; // cleared once they load
  }

  function fillForm() {
    const list = services();
    if (svcIndex >= list.length) svcIndex = 0;
    const pick = $('svc-pick');
    pick.replaceChildren(...list.map((s, i) => {
      const o = el('option', '', (s.name || identity(s)) + ' (' + s.type + ')');
      o.value = String(i);
      return o;
    }));
    pick.value = String(svcIndex);
    $('svc-pick-field').hidden = list.length < 2;

    const s = list[svcIndex] || { type: 'component' };
    $('svc-type-client').checked = s.type === 'client';
    $('svc-type-component').checked = s.type !== 'client';
    $('svc-server').value = s.server || '';
    $('svc-domain').value = s.domain || '';
    $('svc-jid').value = s.jid || '';
    $('svc-policy').value = s.policy === 'roster' ? 'roster' : 'public';
    $('svc-secret').value = '';
    $('svc-password').value = '';
    $('svc-secret-hint').textContent = keepHint(s.secret, s.secret_file, 'secret');
    $('svc-password-hint').textContent = keepHint(s.password, s.password_file, 'password');
    const ch = cfg.channel || {}, ports = cfg.ports || {}, lim = cfg.limits || {};
    $('max-kbps').value = String(ch.max_kbps || 0);
    $('monthly-quota').value = String((lim.monthly_quota_mb || 0) / 1000);
    $('total-kbps').value = String(lim.total_kbps || 0);
    $('ports-min').value = String(ports.min || '');
    $('ports-max').value = String(ports.max || '');
    $('port-mapping').checked = (cfg.port_mapping || {}).mode !== 'off';
    showType();
    clearErrors();
  }

  function keepHint(value, file, what) {
    // The relay keeps a secret only for the same server and account: a
    // secret never follows a service elsewhere.
    if (value === PLACEHOLDER) return 'Leave empty to keep the current ' + what + ' (same server and account only).';
    if (file) return 'Leave empty to keep reading it from ' + file + ' (same server and account only).';
    return 'Required.';
  }

  function showType() {
    const client = svcType() === 'client';
    $('svc-component').hidden = client;
    $('svc-client').hidden = !client;
  }

  // buildPatch turns the form into an RFC 7386 merge patch holding only
  // what changed. Arrays replace whole, so a changed service sends the
  // whole xmpp array, the other entries as loaded (their redacted secrets
  // are kept by the relay).
  function buildPatch() {
    const errs = [], patch = {};
    const int = (id, field) => {
      const v = $(id).value.trim();
      if (!/^\d{1,9}$/.test(v)) { errs.push({ field, message: 'must be a whole number' }); return null; }
      return Number(v);
    };
    const kbps = int('max-kbps', 'channel.max_kbps');
    // The quota is shown in GB and kept in MB: up to three decimals.
    const quotaText = $('monthly-quota').value.trim();
    let quotaMB = null;
    if (/^\d{1,6}(\.\d{1,3})?$/.test(quotaText)) quotaMB = Math.round(Number(quotaText) * 1000);
    else errs.push({ field: 'limits.monthly_quota_mb', message: 'must be a number of GB, such as 50 or 2.5' });
    const pmin = int('ports-min', 'ports.min');
    const pmax = int('ports-max', 'ports.max');
    const ch = cfg.channel || {}, ports = cfg.ports || {}, lim = cfg.limits || {};
    if (kbps !== null && kbps !== (ch.max_kbps || 0)) patch.channel = { max_kbps: kbps };
    const totalKbps = int('total-kbps', 'limits.total_kbps');
    const pl = {};
    if (quotaMB !== null && quotaMB !== (lim.monthly_quota_mb || 0)) pl.monthly_quota_mb = quotaMB;
    if (totalKbps !== null && totalKbps !== (lim.total_kbps || 0)) pl.total_kbps = totalKbps;
    if (Object.keys(pl).length) patch.limits = pl;
    const pp = {};
    if (pmin !== null && pmin !== ports.min) pp.min = pmin;
    if (pmax !== null && pmax !== ports.max) pp.max = pmax;
    if (Object.keys(pp).length) patch.ports = pp;
    const mapping = $('port-mapping').checked ? 'auto' : 'off';
    if (mapping !== ((cfg.port_mapping || {}).mode || 'auto')) patch.port_mapping = { mode: mapping };

    const list = services();
    const old = list[svcIndex] || {};
    const s = Object.assign({}, old); // keeps allow, deny, tls, ca_file…
    const type = svcType();
    const key = `xmpp[${svcIndex}].`;
    s.type = type;
    const server = $('svc-server').value.trim();
    if (server) s.server = server; else delete s.server;
    if (type === 'component') {
      for (const k of ['jid', 'password', 'password_file', 'tls', 'ca_file']) delete s[k];
      if (s.policy === 'roster') delete s.policy;
      s.domain = $('svc-domain').value.trim();
      const secret = $('svc-secret').value;
      if (secret) { s.secret = secret; delete s.secret_file; }
    } else {
      for (const k of ['domain', 'secret', 'secret_file']) delete s[k];
      s.jid = $('svc-jid').value.trim();
      const policy = $('svc-policy').value;
      if (policy !== (old.policy || 'public')) s.policy = policy;
      const password = $('svc-password').value;
      if (password) { s.password = password; delete s.password_file; }
    }
    // A service named after its address follows it. The relay finds a
    // kept secret by name, so a renamed one needs its secret again.
    if ((!old.name || old.name === identity(old)) && identity(s) !== identity(old) && identity(s)) {
      s.name = identity(s);
      if (s.secret === PLACEHOLDER) errs.push({ field: key + 'secret', message: 'enter the secret again: the service address changed' });
      if (s.password === PLACEHOLDER) errs.push({ field: key + 'password', message: 'enter the password again: the account changed' });
    }
    if (JSON.stringify(s) !== JSON.stringify(old)) {
      patch.xmpp = list.length ? list.map((x, i) => (i === svcIndex ? s : x)) : [s];
    }
    return { patch, errs };
  }

  // inputFor finds the form control an API field name refers to.
  function inputFor(field) {
    let input = null;
    const m = /^xmpp\[(\d+)\]\.([a-z_]+)/.exec(field);
    if (m) {
      if (Number(m[1]) !== svcIndex) return null;
      const k = m[2].replace(/_file$/, '');
      input = k === 'type' ? $('svc-type-' + svcType()) : document.querySelector('[data-svc="' + k + '"]');
    } else if (field === 'ports' || field === 'stun.port') {
      input = $('ports-max');
    } else {
      input = [...document.querySelectorAll('[data-field]')].find((x) => x.dataset.field === field) || null;
    }
    return input && !input.closest('[hidden]') ? input : null;
  }

  // showFieldErrors puts each message next to its field and returns
  // those that belong to no field of the form.
  function showFieldErrors(fields) {
    const rest = [];
    let first = null;
    for (const f of fields) {
      const input = inputFor(f.field || '');
      if (!input) { rest.push(f); continue; }
      const slot = input.closest('.field').querySelector('.err');
      slot.textContent = slot.textContent ? slot.textContent + '; ' + f.message : f.message;
      input.setAttribute('aria-invalid', 'true');
      first = first || input;
    }
    if (first) first.focus();
    return rest;
  }

  function clearErrors() {
    for (const e of document.querySelectorAll('#setup-form .err')) e.textContent = '';
    for (const i of document.querySelectorAll('#setup-form [aria-invalid]')) i.removeAttribute('aria-invalid');
  }

  function showMsg(kind, text, extra) {
    const box = $('form-msg');
    box.className = 'msg ' + kind;
    box.dataset.kind = '';
    box.textContent = text;
    if (extra && extra.length) {
      const ul = el('ul');
      for (const f of extra) ul.appendChild(el('li', '', (f.field ? f.field + ': ' : '') + f.message));
      box.appendChild(ul);
    }
    box.hidden = false;
  }

  async function save(ev) {
    ev.preventDefault();
    if (!cfg) return;
    clearErrors();
    const { patch, errs } = buildPatch();
    if (errs.length) {
      showMsg('bad', 'Nothing was saved: please correct the marked fields.', showFieldErrors(errs));
      return;
    }
    if (!Object.keys(patch).length) {
      showMsg('ok', 'Nothing to save: the settings are unchanged.');
      return;
    }
    $('save').disabled = true;
    showMsg('warn', 'Saving… a changed XMPP service may take up to 20 s to come online.');
    try {
      const r = await api('PATCH', '/v1/config', patch, { 'Content-Type': 'application/merge-patch+json', 'If-Match': etag });
      cfg = r.doc;
      etag = r.etag;
      fillForm();
      showMsg('ok', 'Saved. The relay uses the new settings now; calls in progress were not interrupted.');
      poll();
    } catch (e) {
      if (e.status === 401) return;
      if (e.status === 412) {
        try {
          await loadConfig();
          showMsg('warn', 'Nothing was saved: the settings were changed elsewhere since this page loaded them. The form has been reloaded with the current settings; make your change again.');
        } catch (e2) { configError(e2); }
        return;
      }
      const fields = (e.doc && e.doc.fields) || [];
      if (fields.length) {
        showMsg('bad', 'Nothing was saved: please correct the marked fields.', showFieldErrors(fields));
      } else {
        showMsg('bad', 'Nothing was saved: ' + e.message);
      }
    } finally {
      $('save').disabled = false;
    }
  }

  // ---- wiring ----
  $('login-form').addEventListener('submit', signIn);
  $('claim-btn').addEventListener('click', claim);
  $('new-token-ok').addEventListener('click', () => { $('new-token').hidden = true; $('new-token-value').textContent = ''; });
  $('signout').addEventListener('click', () => signedOut(''));
  $('setup-form').addEventListener('submit', save);
  $('reload').addEventListener('click', () => {
    loadConfig().then(() => showMsg('ok', 'Reloaded the current settings.'), configError);
  });
  $('svc-pick').addEventListener('change', () => { svcIndex = Number($('svc-pick').value) || 0; fillForm(); });
  for (const r of document.querySelectorAll('[name="svc-type"]')) r.addEventListener('change', showType);
  document.addEventListener('visibilitychange', () => { if (!document.hidden && token) poll(); });
  window.addEventListener('resize', () => {
    if (usage && $('chart-days').querySelector('.chart-panels').clientWidth !== usageWidth) drawUsage();
  });

  if (token) start(); else signedOut('');
})();
