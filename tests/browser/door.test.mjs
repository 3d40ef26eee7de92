// Real-browser test of the door-station page (door.html) against the intercom page (index.html):
//   1. a panel calls the door; the door answers by itself; audio both ways; the panel hangs up;
//   2. the door's big button rings the whole room: kitchen and hall ring, hall accepts,
//      kitchen stops ringing by itself; audio both ways; the door hangs up;
//   3. autoplay blocked (emulated): the door shows "Tap to enable sound", one tap turns sound on;
//   4. a directed ring: "Call rejected", and "No answer" after the ring timeout (fake clock);
//   5. the daemon restarts: the door comes back online by itself.
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN and isolates the network).
// SCREENSHOTS=DIR saves door-ready.png and door-call.png (800x480) there.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, startDaemon, stopDaemon, makeExpect, waitAudioAbove, launchBrowser, screenshot, openPage } from './lib.mjs';

const KIOSK_VIEWPORT = { width: 800, height: 480 }; // the usual Raspberry Pi touchscreen

describe('door station', { timeout: 120_000 }, () => {
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

  const stateIs = (page, states, ms) => page.waitForFunction(
    (s) => s.includes(document.body.dataset.state), states, { timeout: ms });

  async function openDoor(name, query, options = {}) {
    const page = await newPage(name, { viewport: KIOSK_VIEWPORT, ...options });
    await expect(`${name}: door.html did not load`, 10_000,
      (ms) => page.goto(`${url}door.html?${query}`, { timeout: ms }));
    await expect(`${name}: the door page did not become ready (online, big button enabled)`, 10_000,
      (ms) => page.waitForFunction(() => document.body.dataset.state === 'ready' &&
        document.body.dataset.conn === 'connected' && !document.getElementById('ring-btn').disabled,
      null, { timeout: ms }));
    return page;
  }

  async function openPanel(name) {
    const page = await newPage(name);
    await expect(`${name}'s intercom page did not load`, 10_000,
      (ms) => page.goto(`${url}?room=lobby`, { timeout: ms }));
    await page.fill('#name-input', name);
    await page.click('#connect-btn');
    await expect(`${name} did not get online as "${name}"`, 10_000,
      (ms) => page.waitForFunction((n) => document.body.dataset.conn === 'connected' && window.intercom.id === n,
        name, { timeout: ms }));
    return page;
  }

  async function expectConnectedWithAudio(a, b) {
    for (const name of [a, b]) {
      await expect(`${name}'s ICE connection did not reach connected/completed`, 15_000,
        (ms) => pages[name].waitForFunction(
          () => ['connected', 'completed'].includes(window.intercom.pc && window.intercom.pc.iceConnectionState),
          null, { timeout: ms }));
    }
    for (const name of [a, b]) {
      const first = await expect(`${name} received no audio bytes`, 10_000, (ms) => waitAudioAbove(pages[name], 0, ms));
      const second = await expect(`${name}'s received audio bytes did not grow beyond ${first}`, 10_000,
        (ms) => waitAudioAbove(pages[name], first, ms));
      assert.ok(second > first, `${name}: inbound audio bytes should grow (${first} -> ${second})`);
    }
  }

  before(async () => {
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
    workDir = mkdtempSync(join(tmpdir(), 'intercomd-door-'));
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

  it('a panel calls the door: the door answers by itself, audio both ways, the panel hangs up', async (t) => {
    const door = await openDoor('door', 'id=door&room=lobby&call=*');
    const kitchen = await openPanel('kitchen');
    await screenshot(door, 'door-ready.png');

    await expect('kitchen never saw the door online', 10_000,
      (ms) => kitchen.waitForSelector('[data-testid="call-video-door"]:not([disabled])', { timeout: ms }));
    await kitchen.click('[data-testid="call-video-door"]');

    // No click on the door page: it must answer by itself.
    await expect('the door did not answer kitchen\'s call by itself (state "in-call")', 10_000,
      (ms) => door.waitForFunction(() => document.body.dataset.state === 'in-call' && window.door.pc, null, { timeout: ms }));
    const doorCall = await door.evaluate(() => window.door.currentCall);
    assert.equal(doorCall.peer, 'kitchen', 'the door should be in a call with kitchen');
    assert.equal(doorCall.role, 'callee');
    await expect('kitchen did not reach "in-call" after the door answered', 10_000,
      (ms) => stateIs(kitchen, ['in-call'], ms));

    await expectConnectedWithAudio('door', 'kitchen');
    await expect('the door did not show kitchen\'s camera picture', 10_000,
      (ms) => door.waitForFunction(() => document.getElementById('remote-video').videoWidth > 0, null, { timeout: ms }));
    await expect('kitchen did not show the door\'s camera picture', 10_000,
      (ms) => kitchen.waitForFunction(() => document.getElementById('remote-video').videoWidth > 0, null, { timeout: ms }));
    await expect('the door did not say "Connected — speak now"', 5_000,
      (ms) => door.waitForFunction(() => document.getElementById('headline').textContent === 'Connected — speak now',
        null, { timeout: ms }));
    assert.equal(await door.isVisible('[data-testid="hangup"]'), true, 'the door shows a hang-up button during the call');
    await screenshot(door, 'door-call.png');

    await kitchen.click('#hangup-btn');
    await expect('kitchen did not return to "idle" after hanging up', 10_000,
      (ms) => kitchen.waitForFunction(() => document.body.dataset.state === 'idle' && window.intercom.pc === null,
        null, { timeout: ms }));
    await expect('the door did not return to "ready" after kitchen hung up', 10_000,
      (ms) => door.waitForFunction(() => document.body.dataset.state === 'ready' && window.door.pc === null &&
        !document.getElementById('ring-btn').disabled, null, { timeout: ms }));
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('the big button rings the whole room: hall accepts, kitchen stops ringing, the door hangs up', async () => {
    const { door, kitchen } = pages;
    const hall = await openPanel('hall');
    await expect('the door did not see kitchen and hall online', 10_000,
      (ms) => door.waitForFunction(() => ['kitchen', 'hall'].every((p) => window.door.peers.includes(p)), null, { timeout: ms }));

    await door.click('[data-testid="ring"]');
    await expect('the door did not go to "ringing" after its big button was pressed', 5_000,
      (ms) => stateIs(door, ['ringing'], ms));
    for (const [name, page] of [['kitchen', kitchen], ['hall', hall]]) {
      await expect(`${name} did not ring after the door's button was pressed`, 10_000, (ms) => stateIs(page, ['ringing'], ms));
      assert.equal((await page.textContent('#incoming-from')).trim(), 'door', `${name}'s ringing card should name the door`);
      assert.match(await page.textContent('#incoming-kind'), /everyone/, `${name} should say the door calls everyone`);
    }

    await hall.click('#accept-btn');
    await expect('kitchen did not stop ringing by itself after hall accepted (back to "idle")', 10_000,
      (ms) => kitchen.waitForFunction(() => document.body.dataset.state === 'idle' && window.intercom.pc === null,
        null, { timeout: ms }));
    assert.match(await kitchen.textContent('#status-text'), /hall answered/,
      'kitchen should say that hall answered the door');
    for (const [name, page] of [['door', door], ['hall', hall]]) {
      await expect(`${name} did not reach "in-call" after hall accepted`, 10_000,
        (ms) => page.waitForFunction(() => document.body.dataset.state === 'in-call' && window.intercom.pc, null, { timeout: ms }));
    }
    assert.equal((await door.evaluate(() => window.door.currentCall)).peer, 'hall', 'the door should talk to hall');
    await expectConnectedWithAudio('door', 'hall');
    assert.equal(await kitchen.evaluate(() => document.body.dataset.state), 'idle', 'kitchen stays out of the call');

    await door.click('[data-testid="hangup"]');
    await expect('the door did not return to "ready" after hanging up', 10_000,
      (ms) => door.waitForFunction(() => document.body.dataset.state === 'ready' && window.door.pc === null,
        null, { timeout: ms }));
    await expect('hall did not return to "idle" after the door hung up', 10_000,
      (ms) => hall.waitForFunction(() => document.body.dataset.state === 'idle' && window.intercom.pc === null,
        null, { timeout: ms }));
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('autoplay blocked: the door shows "Tap to enable sound", a tap turns the sound on', async () => {
    const { kitchen } = pages;
    // Emulate Chromium without --autoplay-policy=no-user-gesture-required: <audio>.play() is
    // refused until the page has seen a real tap. (navigator.userActivation cannot tell here:
    // pages that Playwright navigates start out user-activated.)
    const porch = await newPage('porch', { viewport: KIOSK_VIEWPORT });
    await porch.addInitScript(() => {
      let tapped = false;
      addEventListener('pointerdown', (e) => { if (e.isTrusted) tapped = true; }, { capture: true });
      const play = HTMLMediaElement.prototype.play;
      HTMLMediaElement.prototype.play = function () {
        if (this.tagName === 'AUDIO' && !tapped) {
          return Promise.reject(new DOMException('play() failed because the user didn\'t interact with the document first.', 'NotAllowedError'));
        }
        return play.call(this);
      };
    });
    await expect('porch: door.html did not load', 10_000,
      (ms) => porch.goto(`${url}door.html?id=porch&room=lobby&call=kitchen`, { timeout: ms }));
    await expect('porch did not become ready', 10_000,
      (ms) => porch.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: ms }));
    await expect('kitchen never saw the porch online', 10_000,
      (ms) => kitchen.waitForSelector('[data-testid="call-audio-porch"]:not([disabled])', { timeout: ms }));
    await kitchen.click('[data-testid="call-audio-porch"]');
    await expect('the porch did not answer by itself', 10_000, (ms) => stateIs(porch, ['in-call'], ms));
    await expect('the porch did not show "Tap to enable sound" when audio.play() was refused', 10_000,
      (ms) => porch.waitForSelector('[data-testid="enable-sound"]', { state: 'visible', timeout: ms }));
    await porch.click('[data-testid="enable-sound"]');
    await expect('one tap did not turn the sound on (overlay still there or audio not playing)', 5_000,
      (ms) => porch.waitForFunction(() => document.body.dataset.sound === 'on' &&
        document.getElementById('sound-overlay').hidden && !document.getElementById('remote-audio').paused,
      null, { timeout: ms }));
    await kitchen.click('#hangup-btn');
    await expect('the porch did not return to "ready"', 10_000, (ms) => stateIs(porch, ['ready'], ms));
    await porch.context().close();
    delete pages.porch;
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('a directed ring: "Call rejected" when declined, "No answer" after 30 s', async () => {
    const { hall } = pages;
    // Its own door with a controllable clock, so the 30 s ring timeout takes no real time.
    const gate = await newPage('gate', { viewport: KIOSK_VIEWPORT });
    await gate.clock.install();
    await expect('gate: door.html did not load', 10_000,
      (ms) => gate.goto(`${url}door.html?id=gate&room=lobby&call=hall`, { timeout: ms }));
    await expect('gate did not become ready', 10_000, (ms) => stateIs(gate, ['ready'], ms));
    assert.match(await gate.textContent('#ring-target'), /hall/, 'the button says whom it calls');

    await gate.click('[data-testid="ring"]');
    await expect('hall did not ring when the gate called it', 10_000, (ms) => stateIs(hall, ['ringing'], ms));
    assert.equal(await gate.evaluate(() => document.getElementById('headline').textContent), 'Ringing…');
    await hall.click('#reject-btn');
    await expect('the gate did not show "Call rejected" after hall rejected', 10_000,
      (ms) => gate.waitForFunction(() => document.body.dataset.state === 'ready' && document.body.dataset.result === 'rejected' &&
        /rejected/i.test(document.getElementById('result').textContent), null, { timeout: ms }));

    await gate.click('[data-testid="ring"]');
    await expect('hall did not ring the second time', 10_000, (ms) => stateIs(hall, ['ringing'], ms));
    await gate.clock.fastForward(31_000);
    await expect('the gate did not show "No answer" after its 30 s ring timeout', 10_000,
      (ms) => gate.waitForFunction(() => document.body.dataset.state === 'ready' && document.body.dataset.result === 'no-answer' &&
        document.getElementById('result').textContent === 'No answer', null, { timeout: ms }));
    await expect('hall did not stop ringing after the gate gave up', 10_000, (ms) => stateIs(hall, ['idle'], ms));
    await gate.context().close();
    delete pages.gate;
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('the daemon restarts: the door comes back online by itself', async (t) => {
    const { door } = pages;
    await stopDaemon(daemon.child);
    await expect('the door did not notice that the daemon stopped', 5_000,
      (ms) => door.waitForFunction(() => document.body.dataset.conn !== 'connected', null, { timeout: ms }));
    assert.equal(await door.evaluate(() => document.body.dataset.state), 'offline', 'the door shows it is offline');
    // Same port again, so that the page's address stays valid.
    daemon = startDaemon(workDir, port);
    await daemon.port;
    const down = Date.now();
    await expect('the door did not reconnect by itself after the daemon came back', 15_000,
      (ms) => door.waitForFunction(() => document.body.dataset.state === 'ready' && document.body.dataset.conn === 'connected',
        null, { timeout: ms }));
    t.diagnostic(`door back online ${((Date.now() - down) / 1000).toFixed(1)} s after the restart`);
    t.diagnostic(`door tests ${((Date.now() - launched) / 1000).toFixed(1)} s after the browser launched`);
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });
});
