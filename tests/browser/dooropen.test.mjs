// Real-browser test of opening the door from a call (issue 19): the door station (door.html)
// rings the lobby, kitchen's intercom page (index.html) answers, and kitchen opens the door
// with the PIN, through the daemon's door opener (--door-open door=<a script that records its
// runs>, --door-pin-file with 2468):
//   1. during a real call kitchen sees Open door and the PIN field; hall, which was rung too but
//      did not answer, never sees them, and the daemon refuses hall's own request;
//   2. a wrong PIN: the daemon's error in kitchen's status line, the field cleared and focused,
//      and nothing opens (the script never runs);
//   3. the right PIN: "Opening…" while the door's command runs, "Door opened" on the door
//      station as it starts, "Door opened" in kitchen's status line once it exits, one run;
//      the call log's entry of that ring says "door opened by kitchen" on every page;
//   4. kitchen hangs up: Open door stays for the window (30 s) on the idle screen, still
//      opens the door, and goes when the window is over (kitchen's clock is Playwright's);
//   5. the recent-rings list puts door-opened on its ring, and skips a door-opened without a
//      call or of a call it does not know and an event kind it does not know (a routed call log);
//   6. a device key given once in the address (#door-key=KEY, daemon with --door-keys-file
//      too): kept, taken out of the address, and sent instead of asking for the PIN.
// No PIN or key ever reaches a page's console.
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN and isolates the network).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, startDaemon, stopDaemon, makeExpect, waitAudioAbove, launchBrowser, openPage, poll, screenshot,
  openDoorStation, openIntercom, PHONE_VIEWPORT } from './lib.mjs';

const PIN = '2468';
const WRONG_PIN = '1357';
const KEY = 'k3y-for-the-kitchen-panel_0123456789';

describe('open the door from the call', { timeout: 180_000 }, () => {
  let workDir;
  let daemon;
  let url;
  let browser;
  let record;   // the door's command appends one line per run
  let gate;     // and then waits until this file exists (so the test sees "Opening…")
  let script;
  let pinFile;
  let callId;   // the door's ring that kitchen answered
  const logs = [];
  const pages = {};
  const expect = makeExpect(pages, logs);
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));
  const newPage = (name, options = {}) => openPage(browser, name, pages, logs, options);

  const runs = () => (existsSync(record) ? readFileSync(record, 'utf8').split('\n').filter(Boolean) : []);
  const stateIs = (page, states, ms) => page.waitForFunction(
    (s) => [].concat(s).includes(document.body.dataset.state), states, { timeout: ms });
  const statusIs = (page, re, ms) => page.waitForFunction(
    ([source, flags]) => new RegExp(source, flags).test(document.getElementById('status-text').textContent),
    [re.source, re.flags], { timeout: ms });
  /** What the intercom page shows of Open door: where, the button, the PIN field. */
  const doorUi = (page) => page.evaluate(() => {
    const form = document.getElementById('door-form');
    const btn = document.getElementById('door-open-btn');
    const pin = document.getElementById('door-pin');
    const visible = (e) => !!e && e.offsetParent !== null;
    return {
      place: window.intercom.door.place,
      inCallCard: !!form.closest('#call'),
      inAfterCard: !!form.closest('#door-after'),
      button: visible(btn), label: btn.textContent, disabled: btn.disabled,
      pin: visible(pin), pinValue: pin.value, pinFocused: document.activeElement === pin,
      until: document.getElementById('door-until').textContent,
    };
  });
  /** The door page's result line. */
  const doorResult = (page) => page.evaluate(() => ({
    kind: document.body.dataset.result || null,
    text: document.getElementById('result').hidden ? null : document.getElementById('result').textContent,
    opened: window.door.opened,
  }));

  async function expectCallConnected(a, b) {
    for (const name of [a, b]) {
      await expect(`${name}'s ICE connection did not reach connected/completed`, 15_000,
        (ms) => pages[name].waitForFunction(
          () => ['connected', 'completed'].includes(window.intercom.pc && window.intercom.pc.iceConnectionState),
          null, { timeout: ms }));
    }
    await expect(`${a} received no audio from ${b}`, 10_000, (ms) => waitAudioAbove(pages[a], 0, ms));
  }

  /** The door rings the lobby, `answerer` accepts, every other page in `others` stops ringing. */
  async function ringAndAnswer(door, answerer, others) {
    await door.click('[data-testid="ring"]');
    for (const page of [answerer, ...others]) {
      await expect('an intercom page in the lobby did not ring when the door rang', 10_000,
        (ms) => stateIs(page, 'ringing', ms));
    }
    await answerer.click('#accept-btn');
    for (const page of others) {
      await expect('a page that did not answer did not stop ringing', 10_000, (ms) => stateIs(page, 'idle', ms));
    }
    await expect('the door did not reach "in-call" after the answer', 10_000, (ms) => stateIs(door, 'in-call', ms));
    return (await door.evaluate(() => window.door.currentCall)).id;
  }

  /** Starts the daemon with the door opener and the `extra` flags; sets url. */
  async function start(extra = []) {
    daemon = startDaemon(workDir, 0, ['--door-open', `door=${script} door`, '--door-pin-file', pinFile, ...extra]);
    url = `http://127.0.0.1:${await daemon.port}/`;
  }

  before(async () => {
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
    workDir = mkdtempSync(join(tmpdir(), 'intercomd-dooropen-'));
    record = join(workDir, 'opened.log');
    gate = join(workDir, 'gate');
    script = join(workDir, 'open-door');
    pinFile = join(workDir, 'door.pin');
    // The relay of a real door, as a script: it records its run, then holds until the test lets go.
    writeFileSync(script, `#!/bin/sh\necho "opened $*" >> '${record}'\n` +
      `while [ ! -e '${gate}' ]; do sleep 0.05; done\nexit 0\n`, { mode: 0o755 });
    writeFileSync(pinFile, `${PIN}\n`, { mode: 0o600 });
    await start();
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await browser.close();
    if (daemon) await stopDaemon(daemon.child);
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it('the daemon says which doors open and with what', async () => {
    const r = await fetch(`${url}api/door`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { doors: ['door'], needs: 'pin', window: 30 });
  });

  it('kitchen answers the door: Open door with a PIN field in the call card, and only there', async () => {
    const door = await openDoorStation(newPage, expect, url, 'door');
    // Kitchen's clock is Playwright's (it runs as usual until the test moves it), for the window's end.
    const kitchen = await openIntercom(async (name, options) => {
      const page = await newPage(name, options);
      await page.clock.install();
      return page;
    }, expect, url, 'kitchen');
    const hall = await openIntercom(newPage, expect, url, 'hall');
    await expect('the door did not see kitchen and hall online', 10_000, (ms) => door.waitForFunction(
      () => ['kitchen', 'hall'].every((p) => window.door.peers.includes(p)), null, { timeout: ms }));
    for (const [name, page] of [['kitchen', kitchen], ['hall', hall], ['door', door]]) {
      await expect(`${name}'s call log stream did not open`, 10_000, (ms) => page.waitForFunction(
        () => document.getElementById('recent').dataset.stream === 'open', null, { timeout: ms }));
    }
    assert.equal((await doorUi(kitchen)).button, false, 'no Open door before any call');

    callId = await ringAndAnswer(door, kitchen, [hall]);
    await expect('kitchen did not reach "in-call" after accepting', 10_000, (ms) => stateIs(kitchen, 'in-call', ms));
    await expectCallConnected('kitchen', 'door');

    await expect('kitchen, in a call with the door it answered, did not show Open door with the PIN field', 10_000,
      (ms) => poll(() => doorUi(kitchen), (ui) => ui.button && ui.pin, ms, (ui) => `Open door: ${JSON.stringify(ui)}`));
    const ui = await doorUi(kitchen);
    assert.equal(ui.place, 'call');
    assert.ok(ui.inCallCard, 'Open door is in the call card');
    assert.equal(ui.label, 'Open door');
    assert.equal(ui.disabled, false);
    for (const [attribute, value] of [['type', 'password'], ['inputmode', 'numeric'], ['autocomplete', 'off']]) {
      assert.equal(await kitchen.getAttribute('#door-pin', attribute), value, `the PIN field's ${attribute}`);
    }
    await screenshot(kitchen, 'dooropen-call.png');
    const hallUi = await doorUi(hall);
    assert.equal(hallUi.button, false, 'hall, which did not answer, shows no Open door');
    assert.equal(hallUi.place, null);
    // Nor does the daemon open for hall, even with the right PIN and hall's own token.
    const refused = await hall.evaluate(async (pin) => {
      const r = await fetch('/api/door/open', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ door: 'door', id: 'hall', token: localStorage.getItem('intercom.token'), pin }),
      });
      return { status: r.status, body: await r.json() };
    }, PIN);
    assert.equal(refused.status, 403, `hall's own request: ${JSON.stringify(refused)}`);
    assert.equal(refused.body.reason, 'not-your-call');
    assert.deepEqual(runs(), [], 'nothing opened for hall');
  });

  it('a wrong PIN: the daemon\'s error, the field cleared and focused, nothing opens', async () => {
    const { kitchen } = pages;
    await kitchen.fill('#door-pin', WRONG_PIN);
    await kitchen.click('[data-testid="door-open"]');
    await expect('kitchen did not show the daemon\'s "wrong PIN" error in its status line', 10_000,
      (ms) => statusIs(kitchen, /^Door not opened: wrong PIN/, ms));
    const ui = await doorUi(kitchen);
    assert.ok(ui.button && ui.pin, `Open door and the PIN field stay: ${JSON.stringify(ui)}`);
    assert.equal(ui.pinValue, '', 'the wrong PIN was cleared');
    assert.ok(ui.pinFocused, 'the PIN field has the focus again');
    assert.equal(ui.label, 'Open door');
    assert.equal(ui.disabled, false);
    assert.equal(await kitchen.evaluate(() => document.getElementById('status').dataset.level), 'error');
    assert.deepEqual(runs(), [], 'a wrong PIN ran the door\'s command');
    assert.equal(await kitchen.evaluate(() => document.body.dataset.state), 'in-call', 'the call goes on');
  });

  it('the right PIN: Opening…, then Door opened on both sides, one run; the call log says who opened', async () => {
    const { kitchen, door, hall } = pages;
    await kitchen.fill('#door-pin', PIN);
    await kitchen.click('[data-testid="door-open"]');
    await expect('kitchen\'s button did not say "Opening…" and disable itself while the door opens', 5_000,
      (ms) => poll(() => doorUi(kitchen), (ui) => ui.label === 'Opening…' && ui.disabled, ms,
        (ui) => `Open door: ${JSON.stringify(ui)}`));
    // The station hears it when the command starts (a relay pulse takes seconds).
    await expect('the door station did not show "Door opened" to the visitor during the call', 10_000,
      (ms) => poll(() => doorResult(door), (r) => r.kind === 'opened' && r.text === 'Door opened', ms,
        (r) => `the door's result: ${JSON.stringify(r)}`));
    assert.equal(await door.evaluate(() => document.body.dataset.state), 'in-call');
    assert.ok(await door.isVisible('[data-testid="result"]'), '"Door opened" is visible over the call screen');
    await screenshot(door, 'dooropen-door.png');
    assert.deepEqual(runs(), ['opened door'], 'the door\'s command ran once');
    writeFileSync(gate, '');
    await expect('kitchen did not say "Door opened" once the door\'s command ended', 10_000,
      (ms) => statusIs(kitchen, /^Door opened/, ms));
    const ui = await doorUi(kitchen);
    assert.equal(ui.label, 'Open door', 'the button is back');
    assert.equal(ui.disabled, false);
    assert.equal(ui.pinValue, '', 'the PIN does not stay in the field');
    assert.deepEqual(runs(), ['opened door'], 'exactly one run for one press');

    for (const [name, page] of [['kitchen', kitchen], ['hall', hall], ['door', door]]) {
      await expect(`${name}'s recent rings did not say "door opened by kitchen" on the ring`, 10_000,
        (ms) => poll(() => page.evaluate(() => window.intercom.recentRings), (list) => list.some(
          (e) => e.call === callId && e.from === 'door' && /· door opened by kitchen$/.test(e.text)), ms,
        (list) => `the list: ${JSON.stringify(list)}`));
    }
    assert.equal((await doorUi(hall)).button, false, 'hall still shows no Open door');
  });

  it('after hang-up Open door stays for the window, still opens, then goes', async () => {
    const { kitchen, door, hall } = pages;
    const openedBefore = (await doorResult(door)).opened;
    await kitchen.click('#hangup-btn');
    await expect('kitchen did not return to idle after hanging up', 10_000, (ms) => stateIs(kitchen, 'idle', ms));
    await expect('the door did not return to ready', 10_000, (ms) => stateIs(door, 'ready', ms));
    await expect('kitchen did not keep Open door on the idle screen after the call', 5_000,
      (ms) => poll(() => doorUi(kitchen), (ui) => ui.button && ui.pin && ui.inAfterCard, ms,
        (ui) => `Open door: ${JSON.stringify(ui)}`));
    assert.match((await doorUi(kitchen)).until, /Open door \(until \d\d:\d\d:\d\d\)/);
    await screenshot(kitchen, 'dooropen-after.png');

    await kitchen.fill('#door-pin', PIN);
    await kitchen.click('[data-testid="door-open"]');
    await expect('kitchen did not say "Door opened" after the call', 10_000,
      (ms) => kitchen.waitForFunction(() => /^Door opened/.test(document.getElementById('status-text').textContent) &&
        !document.getElementById('door-open-btn').disabled, null, { timeout: ms }));
    await expect('the door station did not show "Door opened" again after the call', 10_000,
      (ms) => poll(() => doorResult(door), (r) => r.opened === openedBefore + 1 && r.kind === 'opened', ms,
        (r) => `the door's result: ${JSON.stringify(r)}`));
    assert.equal(await door.evaluate(() => document.body.dataset.state), 'ready');
    assert.deepEqual(runs(), ['opened door', 'opened door'], 'the second open ran the command once more');
    assert.equal((await doorUi(hall)).button, false, 'hall never shows Open door');

    // 30 s after the call: the window is over and the button goes.
    await kitchen.clock.fastForward(31_000);
    await expect('Open door did not go when the window after the call was over', 5_000,
      (ms) => poll(() => doorUi(kitchen), (ui) => !ui.button && ui.place === null && !ui.inCallCard, ms,
        (ui) => `Open door: ${JSON.stringify(ui)}`));
    assert.equal(await kitchen.isVisible('[data-testid="door-after"]'), false, 'the after-call card went too');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('recent rings: door-opened goes on its ring; unknown kinds and calls change nothing', async () => {
    const page = await newPage('log', { viewport: PHONE_VIEWPORT });
    const time = new Date().toISOString();
    const ev = (seq, event, extra) => ({ seq, event, time, room: 'lobby', from: 'door', ...extra });
    const history = [ev(1, 'ring', { to: '*', call: 'c9', media: 'video' }),
      ev(2, 'answered', { to: '*', call: 'c9', by: 'kitchen', media: 'video', after: 2 })];
    const live = [ev(3, 'lights-on', { call: 'c9', by: 'kitchen' }), ev(4, 'door-opened', { call: 'c9', by: 'kitchen' }),
      ev(5, 'door-opened', { by: 'mqtt' }), ev(6, 'door-opened', { call: 'gone', by: 'kitchen' }), 'not json'];
    const streams = [];
    await page.route(/\/api\/events(\?.*)?$/, (route) => {
      const request = route.request();
      if (!/event-stream/.test(request.headers().accept || '')) {
        return route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ events: history }) });
      }
      streams.push(new URL(request.url()).search);
      // The first stream sends the live events and ends; the page comes back with ?since=.
      const body = streams.length === 1 ? live.map((e) => `data: ${typeof e === 'string' ? e : JSON.stringify(e)}\n\n`).join('') : '';
      return route.fulfill({ status: 200, contentType: 'text/event-stream', body });
    });
    await expect('the intercom page did not load', 10_000, (ms) => page.goto(`${url}?room=lobby`, { timeout: ms }));
    const list = await expect('the list did not put "door opened by kitchen" on the ring of call c9', 10_000,
      (ms) => poll(() => page.evaluate(() => window.intercom.recentRings),
        (l) => l.length === 1 && /· door opened by kitchen$/.test(l[0].text), ms, (l) => `the list: ${JSON.stringify(l)}`));
    assert.equal(list[0].call, 'c9');
    assert.equal(list[0].outcome, 'answered');
    assert.deepEqual(list[0].opened, ['kitchen']);
    assert.match(list[0].text, /^door rang (on .+ )?at \d\d:\d\d · answered by kitchen · door opened by kitchen$/);
    assert.equal(await page.locator('#rings-list > li').count(), 1, 'no entry for an unknown call or kind');
    assert.equal(await page.getAttribute('#rings-list > li', 'data-opened'), 'kitchen');
    // The stream goes on after the last event it was sent, the unknown kind included.
    await expect('the page did not come back to the call log with ?since=6', 10_000,
      (ms) => poll(() => streams.slice(1), (s) => s.includes('?since=6'), ms, (s) => `streams opened: ${JSON.stringify(streams)}`));
    await page.context().close();
    delete pages.log;
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('a device key given once in the address is kept and sent instead of asking for the PIN', async () => {
    for (const name of ['kitchen', 'hall', 'door']) {
      await pages[name].context().close();
      delete pages[name];
    }
    await stopDaemon(daemon.child);
    const keys = join(workDir, 'door.keys');
    writeFileSync(keys, `kitchen-panel ${KEY}\n`, { mode: 0o600 });
    await start(['--door-keys-file', keys]);
    const info = await (await fetch(`${url}api/door`)).json();
    assert.equal(info.needs, 'pin-or-key');

    const door = await openDoorStation(newPage, expect, url, 'door');
    const panel = await newPage('panel', { viewport: PHONE_VIEWPORT });
    await expect('the panel\'s intercom page did not load', 10_000,
      (ms) => panel.goto(`${url}?room=lobby#door-key=${encodeURIComponent(KEY)}`, { timeout: ms }));
    assert.equal(await panel.evaluate(() => location.hash), '', 'the key left the address bar');
    assert.equal(await panel.evaluate(() => location.search), '?room=lobby', 'the rest of the address stays');
    assert.equal(await panel.evaluate(() => localStorage.getItem('intercom.door-key')), KEY, 'the key is kept');
    await panel.fill('#name-input', 'panel');
    await panel.click('#connect-btn');
    await expect('the panel did not get online', 10_000, (ms) => panel.waitForFunction(
      () => document.body.dataset.conn === 'connected' && window.intercom.id === 'panel', null, { timeout: ms }));
    await expect('the door did not see the panel', 10_000,
      (ms) => door.waitForFunction(() => window.door.peers.includes('panel'), null, { timeout: ms }));

    await ringAndAnswer(door, panel, []);
    await expect('the panel did not show Open door during the call', 10_000,
      (ms) => poll(() => doorUi(panel), (ui) => ui.button && ui.place === 'call', ms,
        (ui) => `Open door: ${JSON.stringify(ui)}`));
    assert.equal((await doorUi(panel)).pin, false, 'with a key kept, no PIN field');
    await panel.click('[data-testid="door-open"]');
    await expect('the panel did not say "Door opened" with its key', 10_000, (ms) => statusIs(panel, /^Door opened/, ms));
    await expect('the door station did not show "Door opened"', 10_000,
      (ms) => poll(() => doorResult(door), (r) => r.kind === 'opened', ms, (r) => `the door's result: ${JSON.stringify(r)}`));
    assert.equal(runs().length, 3, 'the key opened the door once');
    await panel.click('#hangup-btn');
    await expect('the door did not return to ready', 10_000, (ms) => stateIs(door, 'ready', ms));

    const leaks = logs.filter((l) => [PIN, WRONG_PIN, KEY].some((secret) => l.includes(secret)));
    assert.deepEqual(leaks, [], 'a PIN or the key reached a page\'s console');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });
});
