// Real-browser test of the "Recent rings" list (the daemon's call log, GET /api/events as
// Server-Sent Events) on the intercom page (index.html, phone-sized) and the door station (door.html):
//   1. the door rings the room and cancels before anyone answers: kitchen's list shows the ring
//      live ("ringing…"), then both pages show it as missed, with the badge;
//   2. the door rings again and kitchen accepts: "answered by kitchen" on both, newest first;
//   3. the log comes from the daemon: a reloaded page, a fresh browser context, and a page
//      after the daemon restarted all show the same entries; a page whose stream was down
//      while the door rang catches up once it reconnects;
//   4. event text is never markup: a peer ringing with a call id that is HTML shows it as text;
//   5. a daemon without the call log (404): the list stays hidden and the page works as before.
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN and isolates the network).
// SCREENSHOTS=DIR saves calllog-intercom.png (390x844) and calllog-door.png (800x480) there.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, startDaemon, stopDaemon, makeExpect, launchBrowser, poll, screenshot, openPage,
  openDoorStation, openIntercom, PHONE_VIEWPORT } from './lib.mjs';

// "door rang at 14:02 · missed"; "on <date> at" only if the test straddles midnight.
const line = (who, outcome) => new RegExp(`^${who} rang (on .+ )?at \\d\\d:\\d\\d · ${outcome}$`);

describe('recent rings (call log)', { timeout: 120_000 }, () => {
  let workDir;
  let daemon;
  let port;
  let url;
  let browser;
  let launched;
  const logs = [];
  const pages = {};
  const expect = makeExpect(pages, logs);
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));
  const newPage = (name, options = {}) => openPage(browser, name, pages, logs, options);

  const stateIs = (page, state, ms) => page.waitForFunction(
    (s) => document.body.dataset.state === s, state, { timeout: ms });

  /** The list as the page shows it: [{text, outcome, badge}] of the visible entries, newest first. */
  const shown = (page) => page.evaluate(() => {
    const box = document.getElementById('recent');
    if (!box || box.hidden || !box.offsetParent) return [];
    return Array.from(document.querySelectorAll('#rings-list > li'), (li) => {
      const badge = li.querySelector('.badge.missed');
      return {
        text: li.textContent, outcome: li.dataset.outcome, call: li.dataset.call,
        badge: badge ? badge.textContent : null, icon: !!(badge && badge.querySelector('svg')),
      };
    });
  });

  /** Waits until the page's visible list passes ok(list) (read every 100 ms); returns it. */
  function waitList(name, what, ok, ms = 10_000) {
    return expect(`${name}'s recent rings did not show ${what}`, ms,
      (timeout) => poll(() => shown(pages[name]), ok, timeout, (last) => `the list: ${JSON.stringify(last)}`));
  }

  const openDoor = (name) => openDoorStation(newPage, expect, url, name);
  const openPanel = (name, options) => openIntercom(newPage, expect, url, name, options);

  before(async () => {
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
    workDir = mkdtempSync(join(tmpdir(), 'intercomd-calllog-'));
    daemon = startDaemon(workDir);
    port = await daemon.port;
    url = `http://127.0.0.1:${port}/`;
    browser = await launchBrowser();
    launched = Date.now();
  });

  after(async () => {
    if (browser) await browser.close();
    if (daemon) await stopDaemon(daemon.child);
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it('a ring nobody answers: ringing… while it rings, then missed with a badge on both pages', async () => {
    const door = await openDoor();
    const kitchen = await openPanel('kitchen');
    // A fresh daemon has no call log: nothing to show, so no empty box either.
    assert.deepEqual(await shown(kitchen), [], 'kitchen shows no recent rings before the first ring');
    assert.deepEqual(await shown(door), [], 'the door shows no recent rings before the first ring');
    await expect('the door did not see kitchen online', 10_000,
      (ms) => door.waitForFunction(() => window.door.peers.includes('kitchen'), null, { timeout: ms }));
    // What comes after the history is news, said in the live region: wait until it is listening.
    await expect('kitchen\'s event stream did not open', 10_000,
      (ms) => kitchen.waitForFunction(() => document.getElementById('recent').dataset.stream === 'open', null, { timeout: ms }));

    await door.click('[data-testid="ring"]');
    await expect('kitchen did not ring', 10_000, (ms) => stateIs(kitchen, 'ringing', ms));
    await waitList('kitchen', 'the ring live, as "ringing…"', (list) => list.length === 1 && list[0].outcome === 'ringing');
    assert.match((await shown(kitchen))[0].text, line('door', 'ringing…'));

    // The door gives up (its Cancel button): the daemon logs the ring as missed.
    await door.click('[data-testid="hangup"]');
    await expect('kitchen did not stop ringing after the door cancelled', 10_000, (ms) => stateIs(kitchen, 'idle', ms));
    await expect('the door did not return to ready', 10_000, (ms) => stateIs(door, 'ready', ms));
    for (const name of ['kitchen', 'door']) {
      const list = await waitList(name, 'the ring as missed', (l) => l.length === 1 && l[0].outcome === 'missed');
      assert.match(list[0].text, line('door', 'missed'), `${name}'s entry`);
      assert.equal(list[0].badge, 'missed', `${name}: a missed ring has a badge that says "missed"`);
      assert.ok(list[0].icon, `${name}: the missed badge has an icon, not just a colour`);
    }
    assert.equal(await kitchen.getAttribute('#recent', 'aria-labelledby'), 'recent-title');
    assert.equal((await kitchen.textContent('#recent-title')).trim(), 'Recent rings');
    assert.equal(await kitchen.getAttribute('#rings-live', 'aria-live'), 'polite');
    assert.match(await kitchen.textContent('#rings-live'), /door rang .* missed/, 'the change was said in the live region');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('a ring kitchen answers: "answered by kitchen", newest first, on both pages', async () => {
    const { door, kitchen } = pages;
    await door.click('[data-testid="ring"]');
    await expect('kitchen did not ring the second time', 10_000, (ms) => stateIs(kitchen, 'ringing', ms));
    await kitchen.click('#accept-btn');
    for (const [name, page] of [['kitchen', kitchen], ['door', door]]) {
      await expect(`${name} did not reach "in-call"`, 10_000, (ms) => stateIs(page, 'in-call', ms));
    }
    await kitchen.click('#hangup-btn');
    await expect('kitchen did not return to idle', 10_000, (ms) => stateIs(kitchen, 'idle', ms));
    await expect('the door did not return to ready', 10_000, (ms) => stateIs(door, 'ready', ms));
    for (const name of ['kitchen', 'door']) {
      // "door rang at 14:05 · answered by kitchen · 3 s": with the duration once the call has ended.
      const list = await waitList(name, 'the answered and ended ring above the missed one',
        (l) => l.length === 2 && l[0].outcome === 'answered' && / s$/.test(l[0].text) && l[1].outcome === 'missed');
      assert.match(list[0].text, line('door', 'answered by kitchen · \\d+ s'), `${name}'s newest entry`);
      assert.equal(list[0].badge, null, 'an answered ring has no missed badge');
      assert.match(list[1].text, line('door', 'missed'), `${name}'s older entry`);
    }
    await screenshot(kitchen, 'calllog-intercom.png');
    await screenshot(door, 'calllog-door.png');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('the log comes from the daemon: after a reload, in a fresh browser, after a daemon restart', async () => {
    const want = (l) => l.length === 2 && l[0].outcome === 'answered' && l[1].outcome === 'missed';
    const expected = await shown(pages.kitchen);
    await expect('kitchen did not reload', 10_000, (ms) => pages.kitchen.reload({ timeout: ms }));
    let list = await waitList('kitchen', 'both entries after a reload', want);
    assert.deepEqual(list.map((e) => e.text), expected.map((e) => e.text), 'the same entries after the reload');

    // A browser that never went online: the list shows before anyone picks a name.
    const visitor = await newPage('visitor', { viewport: PHONE_VIEWPORT });
    await expect('the visitor\'s page did not load', 10_000, (ms) => visitor.goto(`${url}?room=lobby`, { timeout: ms }));
    list = await waitList('visitor', 'the log on a page that is not online', want);
    assert.deepEqual(list.map((e) => e.text), expected.map((e) => e.text), 'a fresh browser sees the same log');
    assert.equal(await visitor.isVisible('#login'), true, 'the visitor is still at the name form');
    await visitor.context().close();
    delete pages.visitor;

    // The daemon keeps its log in --state-dir: restarted on the same port, it still has it.
    // Kitchen's stream is held back (its requests wait) until the door has rung again, so
    // kitchen must catch up on a ring it did not see live.
    const { door, kitchen } = pages;
    let release;
    const held = new Promise((resolve) => { release = resolve; });
    await kitchen.route('**/api/events*', async (route) => { await held; await route.continue(); });
    await stopDaemon(daemon.child);
    daemon = startDaemon(workDir, port);
    await daemon.port;
    await expect('the door did not reload', 10_000, (ms) => door.reload({ timeout: ms }));
    list = await waitList('door', 'both entries after the daemon restarted', want, 15_000);
    assert.deepEqual(list.map((e) => e.text), expected.map((e) => e.text), 'the restarted daemon gave the same log');

    await expect('the door did not become ready with kitchen back online', 20_000, (ms) => door.waitForFunction(
      () => document.body.dataset.state === 'ready' && window.door.peers.includes('kitchen'), null, { timeout: ms }));
    await door.click('[data-testid="ring"]');
    await expect('kitchen did not ring after the restart', 10_000, (ms) => stateIs(kitchen, 'ringing', ms));
    await door.click('[data-testid="hangup"]');
    await expect('kitchen did not stop ringing', 10_000, (ms) => stateIs(kitchen, 'idle', ms));
    await waitList('door', 'the new missed ring', (l) => l.length === 3 && l[0].outcome === 'missed');
    assert.equal((await shown(kitchen)).length, 2, 'kitchen\'s stream was held back: it has not seen the new ring yet');
    release();
    list = await waitList('kitchen', 'the ring it missed while its stream was down, once it reconnected',
      (l) => l.length === 3 && l[0].outcome === 'missed', 20_000);
    assert.match(list[0].text, line('door', 'missed'));
    await kitchen.unroute('**/api/events*');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('text from the network is shown as text, never as markup', async () => {
    const kitchen = pages.kitchen;
    await expect('kitchen did not get back online after the restart', 15_000, (ms) => kitchen.waitForFunction(
      () => document.body.dataset.conn === 'connected', null, { timeout: ms }));
    // A hostile client: a call id (any printable ASCII without spaces) that is HTML.
    const evil = '<img/src=x/onerror=window.pwned=1>';
    const sent = await kitchen.evaluate(async ([u, callId]) => {
      const ws = new WebSocket(`${u.replace(/^http/, 'ws')}ws?id=mallory&room=lobby`);
      await new Promise((resolve, reject) => { ws.onmessage = resolve; ws.onerror = reject; });
      ws.send(JSON.stringify({ type: 'call-request', to: 'kitchen', call: callId, media: 'audio' }));
      window.malloryWs = ws;
      return true;
    }, [url, evil]);
    assert.ok(sent);
    await expect('kitchen did not ring for mallory', 10_000, (ms) => stateIs(kitchen, 'ringing', ms));
    await kitchen.click('#reject-btn');
    const list = await waitList('kitchen', 'mallory\'s ring as declined',
      (l) => l.length >= 1 && /^mallory/.test(l[0].text) && l[0].outcome === 'declined');
    assert.match(list[0].text, /^mallory rang kitchen (on .+ )?at \d\d:\d\d · declined by kitchen$/);
    assert.equal(list[0].call, evil, 'the call id is kept as text');
    // The only pictures are the door's own stills (with the ring, as /snapshots/<name>).
    const foreign = await kitchen.evaluate(() => Array.from(document.querySelectorAll('#recent img'))
      .filter((img) => !/^\/snapshots\/[0-9a-f]{32}\.jpg$/.test(img.getAttribute('src'))).length);
    assert.equal(foreign, 0, 'no element came from the event');
    assert.equal(await kitchen.evaluate(() => window.pwned), undefined, 'no script ran');
    await kitchen.evaluate(() => window.malloryWs.close());
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('a daemon without the call log: no list, and the page works as before', async (t) => {
    const hall = await newPage('hall', { viewport: PHONE_VIEWPORT });
    let asked = 0;
    await hall.route('**/api/events*', (route) => {
      asked += 1;
      return route.fulfill({ status: 404, contentType: 'application/json', body: '{"error":"not-found"}' });
    });
    await expect('hall\'s page did not load', 10_000, (ms) => hall.goto(`${url}?room=lobby`, { timeout: ms }));
    await hall.fill('#name-input', 'hall');
    await hall.click('#connect-btn');
    await expect('hall did not get online without the call log', 10_000, (ms) => hall.waitForFunction(
      () => document.body.dataset.conn === 'connected' && window.intercom.peers.includes('kitchen'), null, { timeout: ms }));
    assert.ok(asked >= 1, 'the page asked for /api/events');
    assert.equal(await hall.isVisible('#recent'), false, 'no list without the call log');
    // Calls still work: kitchen rings hall, hall rejects.
    await expect('kitchen never saw hall online', 10_000,
      (ms) => pages.kitchen.waitForSelector('[data-testid="call-audio-hall"]:not([disabled])', { timeout: ms }));
    await pages.kitchen.click('[data-testid="call-audio-hall"]');
    await expect('hall did not ring', 10_000, (ms) => stateIs(hall, 'ringing', ms));
    await hall.click('#reject-btn');
    await expect('kitchen did not hear the reject', 10_000, (ms) => stateIs(pages.kitchen, 'idle', ms));
    assert.equal(await hall.isVisible('#recent'), false, 'still no list');
    t.diagnostic(`call log tests ${((Date.now() - launched) / 1000).toFixed(1)} s after the browser launched`);
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });
});
