// The PeerJS client's page for the browser suite: the unmodified client (npm `peerjs`, its
// dist/peerjs.min.js, version pinned in package.json) and a page of glue that creates one Peer
// and writes down what it and its connections do, served by the daemon from a --www folder made
// by `peerjsWww`, so that the page is of the daemon's own origin. peerjs.test.mjs (Chromium) and
// firefox.test.mjs use it.
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
export const PEERJS_DIR = dirname(require.resolve('peerjs/package.json'));
export const PEERJS_VERSION = require('peerjs/package.json').version;

// The page: PeerJS itself and glue that creates one Peer and writes down what it and its
// connections do, for the test to read. Everything else the test does through the PeerJS API.
export const PAGE = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>PeerJS on intercomd</title>
<script src="peerjs.min.js"></script>
<script>
const pj = window.pj = { peer: null, id: null, events: [], errors: [], conns: [] };
const note = (what) => pj.events.push(what);
// Records a DataConnection or MediaConnection: whether it opened, closed, what arrived.
pj.track = (conn, how) => {
  const rec = { conn, how, kind: conn.type, peer: conn.peer, id: conn.connectionId,
    open: false, closed: false, stream: false, received: [], errors: [] };
  pj.conns.push(rec);
  conn.on('open', () => { rec.open = true; note(conn.type + ' ' + how + ' ' + conn.peer + ' open'); });
  conn.on('close', () => { rec.closed = true; note(conn.type + ' ' + how + ' ' + conn.peer + ' close'); });
  conn.on('error', (e) => { rec.errors.push(e.type); note(conn.type + ' ' + how + ' ' + conn.peer + ' error ' + e.type); });
  if (conn.type === 'data') conn.on('data', (d) => rec.received.push(d));
  else conn.on('stream', () => { rec.stream = true; note('media ' + how + ' ' + conn.peer + ' stream'); });
  return rec;
};
pj.start = (id) => {
  const options = { host: location.hostname, port: Number(location.port), path: '/peerjs', secure: false,
    config: { iceServers: [] }, debug: 2 };
  const peer = pj.peer = id ? new Peer(id, options) : new Peer(options);
  peer.on('open', (got) => { pj.id = got; note('open ' + got); });
  peer.on('error', (e) => { pj.errors.push({ type: e.type, message: e.message }); note('error ' + e.type + ': ' + e.message); });
  peer.on('disconnected', (got) => note('disconnected ' + got));
  peer.on('close', () => note('close'));
  peer.on('connection', (conn) => pj.track(conn, 'in'));
  peer.on('call', (conn) => pj.track(conn, 'in'));
};
</script>
<p>PeerJS glue for intercomd's browser test.</p>
</html>
`;

/** What a page's Peer and connections look like, one line, for failure messages. */
export function summary(page) {
  return page.evaluate(() => {
    const p = window.pj && window.pj.peer;
    if (!p) return '(no Peer)';
    const conns = window.pj.conns.map((r) => `${r.kind}/${r.how}/${r.peer}:` +
      `${r.closed ? 'closed' : r.conn.open ? 'open' : 'not-open'}` +
      `${r.kind === 'data' ? ` rx=${r.received.length}` : ` stream=${r.stream}`}` +
      `${r.conn.peerConnection ? ` pc=${r.conn.peerConnection.connectionState}` : ''}`).join(', ');
    return `id=${window.pj.id} open=${p.open} disconnected=${p.disconnected} destroyed=${p.destroyed} ` +
      `conns=[${conns}] events=[${window.pj.events.slice(-8).join('; ')}]`;
  }).catch((e) => `(unreadable: ${e.message})`);
}

/** Inbound audio bytes of this page's MediaConnection `callId` (-1: not open). */
export function audioBytes(page, callId) {
  return page.evaluate(async (c) => {
    const rec = window.pj.conns.find((r) => r.id === c && !r.closed);
    const pc = rec && rec.conn.peerConnection;
    if (!pc) return -1;
    let bytes = 0;
    (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') bytes += r.bytesReceived || 0; });
    return bytes;
  }, callId);
}


/** A --www folder under `workDir` holding peerjs.min.js and the glue page as app.html; its path. */
export function peerjsWww(workDir) {
  const www = join(workDir, 'www');
  mkdirSync(www);
  copyFileSync(join(PEERJS_DIR, 'dist', 'peerjs.min.js'), join(www, 'peerjs.min.js'));
  writeFileSync(join(www, 'app.html'), PAGE);
  return www;
}
