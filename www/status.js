// status.html: reads GET /api/status at once when the daemon's live event stream (GET /api/events)
// says something happened (a device came or went, a call), and every 2 s for the counters, while
// the page is visible; while it is hidden it reads nothing and holds no stream, so a status page
// nobody looks at costs the Pi nothing. Every value is written with textContent: ids and targets
// are never markup.
'use strict';

const POLL_MS = 2000;
let timer = null;
let inFlight = false;
let again = false;
let source = null;

const $ = (id) => document.getElementById(id);

function el(tag, text, attributes) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

function replace(parent, children) {
  parent.replaceChildren(...children);
}

function facts(parent, pairs) {
  replace(parent, pairs.flatMap(([term, value, testid]) => {
    const dd = el('dd', value);
    if (testid) dd.dataset.testid = testid;
    return [el('dt', term), dd];
  }));
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
  const m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

function number(n) {
  return Number(n).toLocaleString();
}

function render(status) {
  $('version').textContent = status.version;
  $('uptime').textContent = `${duration(status.uptimeSeconds)} (since ${when(status.started)})`;
  $('listen').textContent = [`http ${status.listen.http}`, status.listen.https && `https ${status.listen.https}`]
    .filter(Boolean).join(', ');
  const urls = [...status.urls.https, ...status.urls.http];
  replace($('urls'), urls.length ? urls.map((url) => {
    const li = el('li');
    li.append(el('a', url, { href: url }));
    if (url.startsWith('http:')) li.append(el('span', ' (no microphone: see the https address)', { class: 'muted' }));
    return li;
  }) : [el('li', 'No address a phone could use: the daemon listens on loopback only.', { class: 'muted' })]);
  // The code a phone scans to be set up (see trust.html?onboard); drawn again only if it changed.
  if (status.onboard && $('scan').dataset.url !== status.onboard && typeof onboardQr === 'function') {
    $('scan').dataset.url = status.onboard;
    replace($('scan'), [onboardQr(status.onboard, 'Scan with a phone or tablet to set it up')]);
  }

  // The daemon lists them in no particular order.
  const byName = (key) => (a, b) => (a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0);
  status.peers.sort(byName('id'));
  status.rooms.sort(byName('room'));
  $('online-count').textContent = status.peers.length;
  $('nobody').hidden = status.peers.length > 0;
  replace($('peers'), status.peers.map((peer) => {
    const row = el('tr', null, { 'data-testid': 'peer', 'data-id': peer.id });
    const link = peer.away ? 'away' : peer.transport;
    for (const value of [peer.id, peer.room, peer.protocol === 'peerjs' ? 'PeerJS' : 'intercom', link,
      peer.address || '', when(peer.since)]) {
      row.append(el('td', value));
    }
    return row;
  }));

  replace($('room-list'), status.rooms.length
    ? status.rooms.map((room) => el('li', `${room.room}: ${room.peers} ${room.peers === 1 ? 'device' : 'devices'}`,
      { 'data-testid': 'room', 'data-room': room.room }))
    : [el('li', 'No rooms: nobody is online.', { class: 'muted' })]);

  const c = status.counters;
  const refusedTotal = Object.values(c.messagesRefused).reduce((a, b) => a + b, 0);
  facts($('counter-list'), [
    ['Messages passed on', number(c.messagesRouted), 'messages-routed'],
    ['Messages refused', number(refusedTotal), 'messages-refused'],
    ['Devices dropped for not reading', number(c.peersDroppedSlow), 'dropped-slow'],
    ['Connections accepted', number(c.connectionsAccepted), 'connections-accepted'],
    ['Connections refused (limits)', number(c.connectionsRefused), 'connections-refused'],
    ['Open now: connections, WebSockets', `${number(c.connections)}, ${number(c.websockets)}`, 'open-now'],
    ['Rings not announced (too many)', number(c.ringsSuppressed), 'rings-suppressed'],
    ['Live event streams', number(c.eventStreams), 'event-streams'],
  ]);
  facts($('refused'), Object.entries(c.messagesRefused).filter(([, n]) => n > 0)
    .map(([reason, n]) => [reason, number(n), `refused-${reason}`]));
  if (!refusedTotal) replace($('refused'), [el('dd', 'None.', { class: 'muted' })]);

  const cert = status.certificate;
  if (!cert) {
    facts($('cert'), [['HTTPS', 'off (--no-https)']]);
  } else if (!cert.caFingerprint) {
    facts($('cert'), [['HTTPS', 'with your own certificate (--tls-cert)']]);
  } else {
    facts($('cert'), [
      ['CA fingerprint (SHA-256)', cert.caFingerprint, 'ca-fingerprint'],
      ['Names in the server certificate', cert.names.join(', '), 'cert-names'],
      ['Valid until', when(cert.notAfter), 'cert-not-after'],
      ['Renewed on', when(cert.renewsAt), 'cert-renews'],
    ]);
  }

  replace($('sink-list'), status.sinks.length ? status.sinks.map((sink) => {
    const li = el('li', null, { 'data-testid': 'sink' });
    li.append(el('span', sink.up ? 'up' : 'down', { class: 'pill', 'data-level': sink.up ? 'ok' : 'warn' }), ' ',
      el('b', sink.sink), ` ${sink.target}: ${number(sink.delivered)} delivered, ${number(sink.failed)} failed, ` +
      `${number(sink.dropped)} dropped`);
    return li;
  }) : [el('li', 'None: no --mqtt, --webhook or --ntfy.', { class: 'muted' })]);

  replace($('event-list'), status.events.length ? status.events.slice().reverse().map((event) => {
    const who = [event.from && `from ${event.from}`, event.to && `to ${event.to}`, event.by && `by ${event.by}`]
      .filter(Boolean).join(' ');
    return el('li', `${when(event.time)} ${event.event} ${who}`.trim(), { 'data-testid': 'event' });
  }) : [el('li', 'No calls yet.', { class: 'muted' })]);
}

function setLive(state, text) {
  document.body.dataset.live = state;
  $('live').textContent = text;
  $('live').dataset.level = state === 'live' ? 'ok' : 'warn';
}

async function refresh() {
  clearTimeout(timer);
  timer = null;
  if (document.visibilityState !== 'visible') return;
  if (inFlight) {
    again = true;
    return;
  }
  inFlight = true;
  try {
    const response = await fetch('/api/status', { cache: 'no-store' });
    if (!response.ok) throw new Error(`the daemon answered ${response.status}`);
    const status = await response.json();
    // A read that ends after the page was hidden leaves it paused.
    if (document.visibilityState !== 'visible') return;
    render(status);
    $('problem').hidden = true;
    setLive('live', 'live');
  } catch (error) {
    if (document.visibilityState !== 'visible') return;
    $('problem').textContent = `Can't reach the intercom at ${location.host}: ${error.message}. Retrying…`;
    $('problem').hidden = false;
    setLive('offline', 'offline');
  } finally {
    inFlight = false;
    if (again) {
      again = false;
      refresh();
    } else if (document.visibilityState === 'visible') {
      timer = setTimeout(refresh, POLL_MS);
    }
  }
}

// Every event is news for this page; the log it replays first is coalesced into one read.
function watch() {
  if (source || typeof EventSource !== 'function') return;
  source = new EventSource('/api/events');
  source.onmessage = () => refresh();
  source.onopen = () => refresh();
}

function unwatch() {
  if (source) source.close();
  source = null;
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') {
    watch();
    refresh();
  } else {
    clearTimeout(timer);
    timer = null;
    unwatch();
    setLive('paused', 'paused');
  }
});

watch();
refresh();
