// Real-browser test of the PeerJS-compatible endpoint: the unmodified PeerJS client (npm `peerjs`,
// its dist/peerjs.min.js, version pinned in package.json) in headless Chromium, talking to intercomd
// as it would to a PeerServer: ids asked for and handed out, a data connection, a media call,
// the errors an app sees (a taken id, an id nobody has), a reconnect with the same id, and the far
// side of a destroyed Peer closing its connections.
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN and isolates the network).
// The environment it reads is described in lib.mjs; INTERCOMD_WWW is not used here: the daemon
// serves a folder this test makes (--www), holding peerjs.min.js and a page of glue, so that the
// page is of the daemon's own origin and may open the PeerJS WebSocket.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, startDaemon, stopDaemon, makeExpect, launchBrowser, poll, openPage } from './lib.mjs';
import { PEERJS_VERSION, audioBytes, peerjsWww, summary } from './peerjs-page.mjs';

// Seconds intercomd holds a message for an id that is not connected before it answers EXPIRE
// (the client's peer-unavailable error); short, so that the unknown-id case takes about a second.
const GRACE_S = 1;
// An id as intercomd hands them out and takes them: 1 to 64 of A-Z a-z 0-9 . _ ~ -.
const ID_RE = /^[A-Za-z0-9._~-]{1,64}$/;

describe(`PeerJS client ${PEERJS_VERSION} against intercomd`, { timeout: 180_000 }, () => {
  let workDir;
  let daemon;
  let port;
  let url;
  let browser;
  const logs = [];
  const pages = {};
  // lib.mjs's page summary reads the product pages' state; this page's is summary() below.
  const baseExpect = makeExpect({}, logs);
  // Failure messages also show every page's Peer and connections.
  const expect = async (what, timeoutMs, wait) => {
    try {
      return await baseExpect(what, timeoutMs, wait);
    } catch (e) {
      const lines = [];
      for (const [name, page] of Object.entries(pages)) lines.push(`  ${name}: ${await summary(page)}`);
      e.message += `\nPeerJS state:\n${lines.join('\n')}\ndaemon output (tail):\n${daemon.output().slice(-1500)}`;
      throw e;
    }
  };
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));

  async function openPeerPage(name) {
    const page = await openPage(browser, name, pages, logs);
    const response = await expect(`${name}'s page did not load from ${url}`, 10_000, (ms) => page.goto(url, { timeout: ms }));
    assert.equal(response.status(), 200, `GET ${url} answered ${response.status()}: the daemon does not serve the --www folder`);
    assert.ok(await page.evaluate(() => typeof window.Peer === 'function'), `${name}: peerjs.min.js did not define window.Peer`);
    return page;
  }

  /** Starts a Peer on `page` asking for `id` (none: the server picks) and waits for its open event. */
  async function startPeer(name, id) {
    const page = pages[name];
    await page.evaluate((i) => window.pj.start(i), id);
    const got = await expect(`${name}'s Peer did not fire "open"${id ? ` with id "${id}"` : ''}`, 10_000,
      (ms) => page.waitForFunction(() => window.pj.id, null, { timeout: ms }).then((h) => h.jsonValue()));
    if (id) assert.equal(got, id, `${name}'s Peer opened with id ${got}, not the one it asked for`);
    return got;
  }

  /** Waits for the `n`th peer error (1-based) on `name`'s Peer; returns it. */
  function peerError(name, n, timeoutMs, what) {
    return expect(what, timeoutMs, (ms) => pages[name].waitForFunction((k) => window.pj.errors.length >= k &&
      window.pj.errors[k - 1], n, { timeout: ms }).then((h) => h.jsonValue()));
  }

  async function apiPeers() {
    const res = await fetch(`http://127.0.0.1:${port}/api/peers`);
    assert.equal(res.status, 200, `GET /api/peers answered ${res.status}`);
    return (await res.json()).peers;
  }

  /** Sends `count` numbered messages from `name` on its DataConnection `connId`. */
  function sendNumbered(name, connId, tag, count) {
    return pages[name].evaluate(({ c, t, k }) => {
      const rec = window.pj.conns.find((r) => r.id === c);
      for (let i = 0; i < k; i++) rec.conn.send({ from: t, n: i });
    }, { c: connId, t: tag, k: count });
  }

  function received(name, connId) {
    return pages[name].evaluate((c) => window.pj.conns.find((r) => r.id === c).received, connId);
  }

  let anonId;

  before(async () => {
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
    workDir = mkdtempSync(join(tmpdir(), 'intercomd-peerjs-'));
    const www = peerjsWww(workDir);
    daemon = startDaemon(workDir, 0, ['--www', www, '--reconnect-grace', String(GRACE_S)]);
    port = await daemon.port;
    url = `http://127.0.0.1:${port}/app.html`;
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (daemon) await stopDaemon(daemon.child);
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it('two Peers open with the ids they ask for, one without an id gets one from the server, /api/peers lists them', async () => {
    await openPeerPage('alice');
    await openPeerPage('bob');
    await openPeerPage('anon');
    await startPeer('alice', 'alice');
    await startPeer('bob', 'bob');

    // No id: the client asks GET /peerjs/peerjs/id?ts=..&version=.. and opens the WebSocket with that.
    const idResponse = pages.anon.waitForResponse((r) => new URL(r.url()).pathname === '/peerjs/peerjs/id', { timeout: 10_000 });
    idResponse.catch(() => {}); // awaited below; no unhandled rejection if the Peer fails first
    anonId = await startPeer('anon');
    const res = await expect('anon did not fetch /peerjs/peerjs/id', 10_000, () => idResponse);
    assert.equal(res.status(), 200, `GET /peerjs/peerjs/id answered ${res.status()}`);
    assert.equal(await res.text(), anonId, 'the Peer opened with another id than the server handed out');
    // PeerJS takes the body of /id verbatim as its id (response.text(), no trim), so the body must
    // be the bare id, as PeerServer sends it: anything more ends up in peer.id and in the dst of
    // every app that connects to that id.
    assert.match(anonId, ID_RE, `the Peer's id ${JSON.stringify(anonId)}, the body of GET /peerjs/peerjs/id, is not ` +
      'a bare intercomd id');
    assert.ok(!['alice', 'bob'].includes(anonId), `the server handed out ${anonId}, an id in use`);

    const listed = await poll(apiPeers, (peers) => ['alice', 'bob', anonId].every((id) => peers.some((p) => p.id === id)),
      5_000, (peers) => `/api/peers did not list alice, bob and ${anonId} within 5 s: ${JSON.stringify(peers)}`);
    for (const id of ['alice', 'bob', anonId]) {
      assert.deepEqual(listed.filter((p) => p.id === id), [{ id, room: 'peerjs' }], `/api/peers: ${JSON.stringify(listed)}`);
    }
    assert.deepEqual(pageErrors(), []);
  });

  let aliceData; // alice's DataConnection with bob (alice connected)
  let bobData; // bob's end of it

  it('a reliable data connection carries 50 messages each way, in order', async () => {
    aliceData = await pages.alice.evaluate(() => window.pj.track(window.pj.peer.connect('bob', { reliable: true }), 'out').id);
    await expect('alice\'s DataConnection to bob did not fire "open"', 15_000, (ms) => pages.alice.waitForFunction(
      (c) => window.pj.conns.find((r) => r.id === c).open, aliceData, { timeout: ms }));
    await expect('bob did not get alice\'s connection (peer "connection" event, then "open")', 15_000, (ms) => pages.bob.waitForFunction(
      (c) => window.pj.conns.some((r) => r.id === c && r.how === 'in' && r.open), aliceData, { timeout: ms }));
    bobData = aliceData; // both ends share the connectionId
    const bobConn = await pages.bob.evaluate((c) => { const r = window.pj.conns.find((x) => x.id === c); return { peer: r.peer, reliable: r.conn.reliable }; }, bobData);
    assert.deepEqual(bobConn, { peer: 'alice', reliable: true }, 'bob\'s end should be from alice and reliable');

    const N = 50;
    await Promise.all([sendNumbered('alice', aliceData, 'alice', N), sendNumbered('bob', bobData, 'bob', N)]);
    const want = (from) => Array.from({ length: N }, (_, n) => ({ from, n }));
    await expect(`bob did not receive alice's ${N} messages`, 10_000,
      (ms) => poll(() => received('bob', bobData), (r) => r.length >= N, ms, (r) => `bob has ${r.length}`));
    await expect(`alice did not receive bob's ${N} messages`, 10_000,
      (ms) => poll(() => received('alice', aliceData), (r) => r.length >= N, ms, (r) => `alice has ${r.length}`));
    assert.deepEqual(await received('bob', bobData), want('alice'), 'bob: alice\'s messages, each once, in order');
    assert.deepEqual(await received('alice', aliceData), want('bob'), 'alice: bob\'s messages, each once, in order');
    assert.deepEqual(pageErrors(), []);
  });

  // Between anon and bob, not alice and bob: see the last test for why.
  it('a media call: anon calls bob with its microphone, bob answers with his, audio flows both ways', async () => {
    const callId = await pages.anon.evaluate(async () => {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      return window.pj.track(window.pj.peer.call('bob', stream), 'out').id;
    });
    await expect('bob\'s Peer did not fire "call"', 15_000, (ms) => pages.bob.waitForFunction(
      (c) => window.pj.conns.some((r) => r.id === c && r.how === 'in'), callId, { timeout: ms }));
    await pages.bob.evaluate(async (c) => {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      window.pj.conns.find((r) => r.id === c).conn.answer(stream);
    }, callId);
    for (const name of ['anon', 'bob']) {
      await expect(`${name}'s MediaConnection did not fire "stream"`, 15_000, (ms) => pages[name].waitForFunction(
        (c) => window.pj.conns.find((r) => r.id === c).stream, callId, { timeout: ms }));
    }
    // Audio arrives, and keeps arriving, on both ends.
    for (const [name, other] of [['anon', 'bob'], ['bob', 'anon']]) {
      const first = await expect(`${name} received no audio from ${other}`, 15_000,
        (ms) => poll(() => audioBytes(pages[name], callId), (b) => b > 0, ms, (b) => `inbound-rtp audio bytesReceived ${b}`));
      await expect(`${name}'s audio from ${other} stopped growing`, 10_000,
        (ms) => poll(() => audioBytes(pages[name], callId), (b) => b > first, ms, (b) => `bytesReceived stayed ${b} (was ${first})`));
    }
    assert.deepEqual(pageErrors(), []);
  });

  it('a Peer asking for an id in use gets the "unavailable-id" error; the holder keeps it', async () => {
    await openPeerPage('taker');
    await pages.taker.evaluate(() => window.pj.start('alice'));
    const err = await peerError('taker', 1, 10_000, 'the Peer asking for "alice" got no error event');
    assert.equal(err.type, 'unavailable-id', `error event: ${JSON.stringify(err)}`);
    const taker = await pages.taker.evaluate(() => ({ id: window.pj.id, destroyed: window.pj.peer.destroyed }));
    assert.deepEqual(taker, { id: null, destroyed: true }, 'a Peer refused its id never opens and is destroyed');
    const alice = await pages.alice.evaluate(() => ({ open: window.pj.peer.open, errors: window.pj.errors }));
    assert.deepEqual(alice, { open: true, errors: [] }, 'alice must keep her id and her connection to the server');
    const listed = await apiPeers();
    assert.equal(listed.filter((p) => p.id === 'alice').length, 1, `/api/peers: ${JSON.stringify(listed)}`);
    await pages.taker.context().close();
    delete pages.taker;
  });

  it(`connecting to an id nobody has gives "peer-unavailable" after the reconnect grace (${GRACE_S} s)`, async () => {
    const errorsBefore = await pages.anon.evaluate(() => window.pj.errors.length);
    const t0 = Date.now();
    await pages.anon.evaluate(() => window.pj.track(window.pj.peer.connect('nobody'), 'out'));
    const err = await peerError('anon', errorsBefore + 1, GRACE_S * 1000 + 10_000,
      'connect("nobody") did not give an error event');
    const took = (Date.now() - t0) / 1000;
    assert.equal(err.type, 'peer-unavailable', `error event: ${JSON.stringify(err)}`);
    assert.match(err.message, /nobody/, 'the error should name the id');
    assert.ok(took >= GRACE_S - 0.2, `the error came after ${took} s, before the ${GRACE_S} s grace was over`);
    const open = await pages.anon.evaluate(() => window.pj.peer.open);
    assert.equal(open, true, 'peer-unavailable must not cost the Peer its connection to the server');
    await pages.anon.evaluate(() => window.pj.conns.filter((r) => r.peer === 'nobody').forEach((r) => r.conn.close()));
  });

  it('disconnect() then reconnect() opens again with the same id, and new connections reach it', async () => {
    await pages.alice.evaluate(() => window.pj.peer.disconnect());
    await expect('alice\'s Peer did not fire "disconnected"', 5_000, (ms) => pages.alice.waitForFunction(
      () => window.pj.events.includes('disconnected alice'), null, { timeout: ms }));
    await pages.alice.evaluate(() => { window.pj.id = null; window.pj.peer.reconnect(); });
    const id = await expect('alice\'s Peer did not fire "open" again after reconnect()', 10_000,
      (ms) => pages.alice.waitForFunction(() => window.pj.id, null, { timeout: ms }).then((h) => h.jsonValue()));
    assert.equal(id, 'alice');
    const errors = await pages.alice.evaluate(() => window.pj.errors);
    assert.deepEqual(errors, [], 'alice\'s reconnect should give no error');

    // Signaling reaches the reconnected Peer: anon opens a new data connection to alice (anon,
    // not bob: see the last test for why).
    const connId = await pages.anon.evaluate(() => window.pj.track(window.pj.peer.connect('alice', { reliable: true }), 'out').id);
    await expect('anon\'s new DataConnection to the reconnected alice did not open', 15_000, (ms) => pages.anon.waitForFunction(
      (c) => window.pj.conns.find((r) => r.id === c).open, connId, { timeout: ms }));
    await expect('alice did not get anon\'s new connection', 15_000, (ms) => pages.alice.waitForFunction(
      (c) => window.pj.conns.some((r) => r.id === c && r.open), connId, { timeout: ms }));
    await sendNumbered('anon', connId, 'anon', 1);
    await expect('alice did not receive anon\'s message on the new connection', 5_000,
      (ms) => poll(() => received('alice', connId), (r) => r.length >= 1, ms, (r) => `alice has ${r.length}`));
    assert.deepEqual(await received('alice', connId), [{ from: 'anon', n: 0 }]);
    // The connections made before disconnect() are still there (PeerJS keeps them).
    assert.equal(await pages.alice.evaluate((c) => window.pj.conns.find((r) => r.id === c).conn.open, aliceData), true,
      'alice\'s data connection with bob should survive her disconnect and reconnect');
    const listed = await apiPeers();
    assert.deepEqual(listed.filter((p) => p.id === 'alice'), [{ id: 'alice', room: 'peerjs' }], `/api/peers: ${JSON.stringify(listed)}`);
  });

  // PeerJS 1.5's destroy() closes a Peer's connections with `for (c of list) c.close()` while each
  // close() splices itself out of that same list (Peer._cleanupPeer / _removeConnection), so with
  // two or more connections to one remote Peer every second one is left open, and so is its far
  // end. A client bug, whatever the server: here bob has one connection with each other Peer
  // (data with alice, media with anon), which destroy() does close.
  it('after bob destroy()s his Peer, alice\'s data connection and anon\'s media connection with him close', async () => {
    const withBob = (name) => pages[name].evaluate(() => window.pj.conns
      .filter((r) => r.peer === 'bob' && !r.closed && r.conn.open).map((r) => `${r.kind}:${r.id}`));
    const alice = await withBob('alice');
    const anon = await withBob('anon');
    assert.deepEqual(alice.map((c) => c.split(':')[0]), ['data'], `alice's open connections with bob: ${JSON.stringify(alice)}`);
    assert.deepEqual(anon.map((c) => c.split(':')[0]), ['media'], `anon's open connections with bob: ${JSON.stringify(anon)}`);
    await pages.bob.evaluate(() => window.pj.peer.destroy());
    for (const [name, ids] of [['alice', alice], ['anon', anon]]) {
      await expect(`${name}'s ${ids[0].split(':')[0]} connection with bob did not fire "close"`, 15_000,
        (ms) => pages[name].waitForFunction((list) => list.every((c) => window.pj.conns.find((r) => `${r.kind}:${r.id}` === c).closed),
          ids, { timeout: ms }));
      assert.equal(await pages[name].evaluate(() => window.pj.peer.open), true, `${name} stays connected to the server`);
    }
    // bob's id is released once the grace for his return is over.
    await expect('bob did not leave /api/peers after his grace', GRACE_S * 1000 + 5_000,
      (ms) => poll(apiPeers, (peers) => !peers.some((p) => p.id === 'bob'), ms, (peers) => `/api/peers: ${JSON.stringify(peers)}`));
    assert.deepEqual(pageErrors(), []);
  });
});
