// Real-browser test of the room page (group call): three headless Chromium pages join one room
// through intercomd, all hear each other, one leaves, screen sharing passes from one person to
// another, and a late joiner sees the share that is on. Then two refusals: a name held by another
// connection, and a seventh person in a full room.
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN and isolates the network).
// The environment it reads is described in lib.mjs; in addition:
//   SCREENSHOTS=DIR   saves room-share.png (a, sharing handed to b) and room-share-phone.png
//                     (the phone-sized late joiner) there
//
// getDisplayMedia needs no extra Chromium flag here: with --use-fake-ui-for-media-stream and
// --use-fake-device-for-media-stream (lib.mjs) headless Chromium picks a fake 1280x720 screen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, startDaemon, stopDaemon, makeExpect, launchBrowser, poll, screenshot, openPage } from './lib.mjs';

const ROOM = 'test';

/** Inbound audio bytes on this page's connection with `other` (-1: no connection). */
function audioBytesFrom(page, other) {
  return page.evaluate(async (o) => {
    const pc = window.room && window.room.peers.get(o);
    if (!pc) return -1;
    let bytes = 0;
    (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') bytes += r.bytesReceived || 0; });
    return bytes;
  }, other);
}

/**
 * What the big screen-share area of this page shows: who it says shares, the size of the video,
 * and frames decoded for exactly that track on the connection with `sharer`.
 */
function stageFrom(page, sharer) {
  return page.evaluate(async (s) => {
    const video = document.getElementById('stage-video');
    const stage = document.getElementById('stage');
    const stream = video.srcObject;
    const track = stream && stream.getVideoTracks()[0];
    const out = {
      shown: !stage.hidden, stageSharer: stage.dataset.sharer, sharing: window.room.sharing,
      streamIsShare: !!stream && stream.id === window.room.shareStreamId,
      width: video.videoWidth, height: video.videoHeight, frames: -1,
    };
    const pc = window.room.peers.get(s);
    const receiver = pc && track && pc.getReceivers().find((r) => r.track === track);
    if (receiver) {
      out.frames = 0;
      (await receiver.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') out.frames += r.framesDecoded || 0; });
    }
    return out;
  }, sharer);
}

test('room page: 3-way call, leave, screen share handover, late joiner sees the share', { timeout: 120_000 }, async (t) => {
  assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
  const started = Date.now();
  const workDir = mkdtempSync(join(tmpdir(), 'intercomd-room-'));
  t.after(() => rmSync(workDir, { recursive: true, force: true }));

  const daemon = startDaemon(workDir);
  t.after(() => stopDaemon(daemon.child));
  const port = await daemon.port;
  const url = `http://127.0.0.1:${port}/room.html?room=${ROOM}`;

  const browser = await launchBrowser();
  t.after(() => browser.close());
  const launched = Date.now();
  const steps = [];
  let stepStart = launched;
  const step = (label) => { const now = Date.now(); steps.push(`${label} ${((now - stepStart) / 1000).toFixed(1)} s`); stepStart = now; };

  const logs = [];
  const pages = {};
  const baseExpect = makeExpect(pages, logs);
  // Failure messages also list every page's peer connections.
  const expect = async (what, timeoutMs, wait) => {
    try {
      return await baseExpect(what, timeoutMs, wait);
    } catch (e) {
      const lines = [];
      for (const [name, page] of Object.entries(pages)) {
        const pcs = await page.evaluate(() => window.room ? Array.from(window.room.peers,
          ([id, pc]) => `${id}:${pc.connectionState}/${pc.signalingState}`).join(' ') +
          ` sharing=${window.room.sharing}` : '(no window.room)').catch((x) => `(unreadable: ${x.message})`);
        lines.push(`  ${name}: ${pcs}`);
      }
      e.message += `\npeer connections:\n${lines.join('\n')}`;
      throw e;
    }
  };
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));

  async function open(name, contextOptions = {}) {
    const page = await openPage(browser, name, pages, logs, contextOptions);
    const response = await expect(`${name}'s page did not load from ${url}`, 10_000, (ms) => page.goto(url, { timeout: ms }));
    assert.equal(response.status(), 200, `GET /room.html answered ${response.status()}: the daemon does not serve the room ` +
      'page (rebuild it with cargo build so that its embedded pages include www/room.html, or set INTERCOMD_WWW=www)');
    return page;
  }

  // Picks the name with the page's own form; the room comes from ?room= in the address.
  async function joinAs(name, page) {
    assert.equal(await page.inputValue('#room-input'), ROOM, `${name}: the room field should be filled from ?room=${ROOM}`);
    await page.fill('#name-input', name);
    await page.click('#join-btn');
    await expect(`${name} did not get into room "${ROOM}" (state in-room, id "${name}")`, 10_000,
      (ms) => page.waitForFunction((n) => document.body.dataset.state === 'in-room' && window.room.id === n &&
        window.room.room === 'test', name, { timeout: ms }));
  }

  async function connected(name, other, timeoutMs = 15_000) {
    await expect(`${name}'s connection with ${other} did not reach "connected"`, timeoutMs,
      (ms) => pages[name].waitForFunction((o) => {
        const pc = window.room.peers.get(o);
        return !!pc && pc.connectionState === 'connected';
      }, other, { timeout: ms }));
  }

  async function audioGrows(name, other) {
    const page = pages[name];
    const first = await expect(`${name} received no audio bytes from ${other}`, 10_000, (ms) =>
      poll(() => audioBytesFrom(page, other), (b) => b > 0, ms, (b) => `inbound audio bytes from ${other} stayed at ${b}`));
    const second = await expect(`${name}'s audio bytes from ${other} did not grow beyond ${first}`, 10_000, (ms) =>
      poll(() => audioBytesFrom(page, other), (b) => b > first, ms, (b) => `inbound audio bytes from ${other} stayed at ${b}`));
    assert.ok(second > first);
  }

  async function seesScreenOf(name, sharer) {
    const page = pages[name];
    const says = (s) => `stage: ${JSON.stringify(s)}`;
    const first = await expect(`${name} does not show ${sharer}'s screen share (decoded frames in the big video)`, 10_000,
      (ms) => poll(() => stageFrom(page, sharer),
        (s) => s.shown && s.sharing === sharer && s.stageSharer === sharer && s.streamIsShare && s.frames > 0 && s.width > 0,
        ms, says));
    await expect(`${name}'s frames decoded from ${sharer}'s screen did not grow beyond ${first.frames}`, 10_000,
      (ms) => poll(() => stageFrom(page, sharer), (s) => s.sharing === sharer && s.frames > first.frames, ms, says));
  }

  // a, b and c join one after another; each newcomer offers to everyone already there.
  const opened = await Promise.all(['a', 'b', 'c'].map((name) => open(name)));
  for (const [i, name] of ['a', 'b', 'c'].entries()) await joinAs(name, opened[i]);
  step('join');
  const { a, b, c } = pages;
  const pairs = [['a', 'b'], ['a', 'c'], ['b', 'c']];
  for (const [x, y] of pairs) { await connected(x, y); await connected(y, x); }
  step('connect');
  for (const [x, y] of pairs) { await audioGrows(x, y); await audioGrows(y, x); }
  step('audio');
  for (const name of ['a', 'b', 'c']) {
    for (const other of ['a', 'b', 'c']) {
      assert.ok(await pages[name].isVisible(`[data-testid="tile-${other}"]`), `${name}'s page should show a tile for ${other}`);
    }
  }

  // c leaves with its button: only the connections with c go; a and b keep talking.
  await c.click('#leave-btn');
  await expect('c\'s page did not return to the start form after Leave', 5_000,
    (ms) => c.waitForFunction(() => document.body.dataset.state === 'start' && window.room.peers.size === 0 &&
      window.room.localStream === null, null, { timeout: ms }));
  for (const [name, other] of [['a', 'b'], ['b', 'a']]) {
    await expect(`${name} still has a connection or a tile for c after c left`, 5_000,
      (ms) => pages[name].waitForFunction(() => !window.room.peers.has('c') &&
        !document.querySelector('[data-testid="tile-c"]'), null, { timeout: ms }));
    await connected(name, other, 2_000);
    const before = await audioBytesFrom(pages[name], other);
    await expect(`${name}'s audio from ${other} stopped growing after c left (was ${before})`, 10_000, (ms) =>
      poll(() => audioBytesFrom(pages[name], other), (x) => x > before, ms, (x) => `inbound audio bytes stayed at ${x}`));
  }

  step('leave');

  // a shares its screen; b sees it big.
  await a.click('#share-btn');
  await expect('a\'s page does not say it is sharing after clicking Share screen', 5_000,
    (ms) => a.waitForFunction(() => window.room.sharing === 'a' && window.room.localScreenTrack &&
      document.getElementById('share-btn').getAttribute('aria-pressed') === 'true', null, { timeout: ms }));
  await a.evaluate(() => { window.aScreenTrack = window.room.localScreenTrack; });
  await seesScreenOf('b', 'a');

  step('share a');

  // b shares: a's share stops by itself and a sees b's screen.
  await b.click('#share-btn');
  await expect('a\'s share did not stop when b started sharing (a should show it is not sharing, its screen track ended)', 5_000,
    (ms) => a.waitForFunction(() => window.room.sharing === 'b' && window.room.localScreenTrack === null &&
      window.aScreenTrack.readyState === 'ended' &&
      document.getElementById('share-btn').getAttribute('aria-pressed') === 'false', null, { timeout: ms }));
  await expect('b\'s page does not say it is sharing', 5_000,
    (ms) => b.waitForFunction(() => window.room.sharing === 'b' && !!window.room.localScreenTrack, null, { timeout: ms }));
  await seesScreenOf('a', 'b');
  await screenshot(a, 'room-share.png');

  step('share b');

  // d joins late (phone-sized page) and sees b's share that is on.
  const d = await open('d', { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  await joinAs('d', d);
  for (const other of ['a', 'b']) { await connected('d', other); await connected(other, 'd'); }
  await seesScreenOf('d', 'b');
  step('late join');
  await screenshot(d, 'room-share-phone.png');

  // The call is done: its pages go, so that they do not slow down the rest.
  await Promise.all(['a', 'b', 'c', 'd'].map((name) => pages[name].context().close()));
  for (const name of ['a', 'b', 'c', 'd']) delete pages[name];

  // Refusals say why. Six plain WebSocket peers fill room "full" (ids are server-wide).
  const e = await open('e');
  const filler = await e.context().newPage();
  await filler.goto(`http://127.0.0.1:${port}/healthz`);
  await expect('six plain WebSocket peers could not join room "full"', 5_000, () => filler.evaluate(() => Promise.all(
    ['f1', 'f2', 'f3', 'f4', 'f5', 'f6'].map((id) => new Promise((resolve, reject) => {
      const s = new WebSocket(`ws://${location.host}/ws?id=${id}&room=full`);
      s.onmessage = (m) => (JSON.parse(m.data).type === 'welcome' ? resolve() : null);
      s.onclose = (c) => reject(new Error(`${id} closed with ${c.code}`));
      (window.sockets ||= []).push(s);
    })))));
  // A name that someone else holds:
  await e.fill('#name-input', 'f1');
  await e.click('#join-btn');
  await expect('e, joining as "f1" (held by another connection), was not sent back to the form with "already in use"', 10_000,
    (ms) => e.waitForFunction(() => document.body.dataset.state === 'start' &&
      /already in use/.test(document.getElementById('status-text').textContent), null, { timeout: ms }));
  // A seventh person in a room of six:
  await e.goto(`http://127.0.0.1:${port}/room.html?room=full`);
  await e.fill('#name-input', 'g');
  await e.click('#join-btn');
  await expect('e, joining a room of six, was not sent back to the form with "this room is full (6 people max)"', 10_000,
    (ms) => e.waitForFunction(() => document.body.dataset.state === 'start' && window.room.peers.size === 0 &&
      /room is full \(6 people max\)/i.test(document.getElementById('status-text').textContent), null, { timeout: ms }));
  step('refusals');

  assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  t.diagnostic(`browser launch ${((launched - started) / 1000).toFixed(1)} s, then ${steps.join(', ')}; ` +
    `whole test ${((Date.now() - launched) / 1000).toFixed(1)} s after launch`);
});
