// Real-browser test of the intercom page (index.html): two headless Chromium pages, alice and
// bob, go online through intercomd and use the page's own buttons for
//   1. an audio call: audio bytes grow both ways, chat over the data channel both ways, bob hangs up;
//   2. a video call: frames decoded and a picture shown on both sides, alice hangs up;
//   3. a rejected call, and a call the caller cancels while it rings;
//   4. the daemon restarted in the middle of a call: the call's media keeps flowing (it never
//      passes through the daemon), both pages reconnect by themselves, hang up over the new
//      daemon and call again;
//   5. the page opened by a host name that is not localhost: the insecure-context message;
//   6. a browser without RTCPeerConnection: every page warns at load, and its call rings nobody.
// After every step both pages must be ready for the next call (idle, Call buttons enabled).
//
// Run through ./run.sh DAEMON_BINARY (it sets INTERCOMD_BIN and isolates the network).
// The environment it reads is described in lib.mjs; SCREENSHOTS=DIR saves intercom-call.png.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BIN, INSECURE_HOST, startDaemon, stopDaemon, makeExpect, waitAudioAbove, inboundAudioBytes, launchBrowser,
  poll, remoteVideo, screenshot, openPage,
} from './lib.mjs';

describe('intercom page', { timeout: 180_000 }, () => {
  let workDir;
  let daemon;
  let port;
  let browser;
  let launched;
  const logs = [];
  const pages = {};
  const expect = makeExpect(pages, logs);
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));
  const others = { alice: 'bob', bob: 'alice' };

  before(async () => {
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
    workDir = mkdtempSync(join(tmpdir(), 'intercomd-browser-'));
    daemon = startDaemon(workDir);
    port = await daemon.port;
    browser = await launchBrowser();
    launched = Date.now();
  });

  after(async () => {
    if (browser) await browser.close();
    if (daemon) await stopDaemon(daemon.child);
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  async function newPage(name) {
    // A context of its own: separate storage, so a token of its own. Sized like a tablet
    // in landscape, which is what the screenshot in README shows.
    return openPage(browser, name, pages, logs, { viewport: { width: 1024, height: 700 } });
  }

  const stateIs = (name, state, ms) => pages[name].waitForFunction(
    (s) => document.body.dataset.state === s, state, { timeout: ms });

  /** Both pages idle, online, seeing each other, with both Call buttons enabled. */
  async function bothReady(after) {
    for (const [name, other] of Object.entries(others)) {
      await expect(`${name}'s page was not back to "idle" with no call after ${after}`, 10_000,
        (ms) => pages[name].waitForFunction(() => document.body.dataset.state === 'idle' && window.intercom.pc === null,
          null, { timeout: ms }));
      for (const media of ['audio', 'video']) {
        await expect(`${name}'s Call (${media}) button for ${other} was not enabled after ${after}`, 10_000,
          (ms) => pages[name].waitForSelector(`[data-testid="call-${media}-${other}"]:not([disabled])`, { timeout: ms }));
      }
    }
  }

  /** `caller` clicks Call (media) for `callee`; `callee`'s page rings and names the caller. */
  async function ring(caller, callee, media) {
    await pages[caller].click(`[data-testid="call-${media}-${callee}"]`);
    await expect(`${caller}'s page did not go to "calling" after clicking Call (${media})`, 5_000,
      (ms) => pages[caller].waitForFunction(() => document.body.dataset.state === 'calling', null, { timeout: ms }));
    await expect(`${callee}'s page did not ring (state "ringing") after ${caller} called`, 10_000,
      (ms) => stateIs(callee, 'ringing', ms));
    assert.equal((await pages[callee].textContent('#incoming-from')).trim(), caller,
      `the ringing card on ${callee}'s page should name ${caller}`);
  }

  /** `caller` rings `callee`, who accepts: both in call, ICE connected. */
  async function connectCall(caller, callee, media) {
    await ring(caller, callee, media);
    await pages[callee].click('#accept-btn');
    for (const name of [caller, callee]) {
      await expect(`${name}'s page did not reach "in-call" after ${callee} accepted`, 10_000,
        (ms) => pages[name].waitForFunction(() => document.body.dataset.state === 'in-call' && window.intercom.pc,
          null, { timeout: ms }));
      await expect(`${name}'s ICE connection did not reach connected/completed`, 15_000,
        (ms) => pages[name].waitForFunction(
          () => ['connected', 'completed'].includes(window.intercom.pc && window.intercom.pc.iceConnectionState),
          null, { timeout: ms }));
      const current = await pages[name].evaluate(() => window.intercom.currentCall);
      assert.equal(current.media, media, `${name}'s call should be a ${media} call`);
    }
  }

  /** Inbound audio bytes grow on both pages (two samples each). */
  async function audioFlowsBothWays(when) {
    for (const name of Object.keys(others)) {
      const first = await expect(`${name} received no audio bytes ${when}`, 10_000,
        (ms) => waitAudioAbove(pages[name], 0, ms));
      const second = await expect(`${name}'s received audio bytes did not grow beyond ${first} ${when}`, 10_000,
        (ms) => waitAudioAbove(pages[name], first, ms));
      assert.ok(second > first);
    }
  }

  async function hangUp(who) {
    await pages[who].click('#hangup-btn');
    await bothReady(`${who} hung up`);
    const other = others[who];
    const status = await pages[other].textContent('#status-text');
    assert.match(status, new RegExp(`${who} hung up`), `${other}'s status line should say that ${who} hung up`);
  }

  it('both pages go online and see each other', async () => {
    const url = `http://127.0.0.1:${port}/`;
    for (const name of Object.keys(others)) {
      const page = await newPage(name);
      await expect(`${name}'s page did not load from ${url}`, 10_000, (ms) => page.goto(url, { timeout: ms }));
      assert.equal(await page.isVisible('#secure-warning'), false, 'a page on 127.0.0.1 is a secure context: no warning');
      await page.fill('#name-input', name);
      await page.click('#connect-btn');
      await expect(`${name} did not get online (welcome) as "${name}"`, 10_000,
        (ms) => page.waitForFunction((n) => document.body.dataset.conn === 'connected' && window.intercom.id === n,
          name, { timeout: ms }));
    }
    await bothReady('going online');
  });

  it('an audio call: audio both ways, chat both ways, bob hangs up', async () => {
    const { alice, bob } = pages;
    await connectCall('alice', 'bob', 'audio');
    await audioFlowsBothWays('in an audio call');
    for (const name of Object.keys(others)) {
      await expect(`${name}'s chat (data channel) did not open`, 10_000,
        (ms) => pages[name].waitForFunction(() => window.intercom.dc && window.intercom.dc.readyState === 'open' &&
          !document.getElementById('chat-send').disabled, null, { timeout: ms }));
    }
    const chats = [[alice, bob, 'alice', 'bob', 'hello bob, from alice'], [bob, alice, 'bob', 'alice', 'hi alice, bob here']];
    for (const [from, to, fromName, toName, text] of chats) {
      await from.fill('#chat-input', text);
      await from.click('#chat-send');
      await expect(`${toName} did not see ${fromName}'s chat message "${text}"`, 5_000,
        (ms) => to.waitForFunction((t) => document.getElementById('chat-log').textContent.includes(t), text, { timeout: ms }));
      await expect(`${fromName} did not see its own chat message in its log`, 2_000,
        (ms) => from.waitForFunction((t) => document.getElementById('chat-log').textContent.includes(t), text, { timeout: ms }));
    }
    await hangUp('bob');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('a video call: frames decoded and a picture shown on both sides, alice hangs up', async () => {
    await connectCall('bob', 'alice', 'video');
    for (const [name, other] of Object.entries(others)) {
      const says = (v) => `remote video: ${JSON.stringify(v)}`;
      const first = await expect(`${name} did not decode and show video from ${other}`, 10_000,
        (ms) => poll(() => remoteVideo(pages[name]), (v) => v && v.frames > 0 && v.width > 0 && !v.hidden, ms, says));
      await expect(`${name}'s decoded frames from ${other} did not grow beyond ${first.frames}`, 10_000,
        (ms) => poll(() => remoteVideo(pages[name]), (v) => v && v.frames > first.frames, ms, says));
      assert.equal(await pages[name].isVisible('#local-video'), true, `${name} shows its own camera picture`);
    }
    await audioFlowsBothWays('in a video call');
    // The chat line that says the data channel is open makes a truer picture of a call in progress.
    await expect('bob\'s chat (data channel) did not open', 10_000,
      (ms) => pages.bob.waitForFunction(() => !document.getElementById('chat-send').disabled, null, { timeout: ms }));
    await pages.bob.fill('#chat-input', 'Parcel at the door, can you get it?');
    await pages.bob.click('#chat-send');
    await expect('alice did not see bob\'s chat message', 5_000,
      (ms) => pages.alice.waitForFunction(() => document.getElementById('chat-log').textContent.includes('Parcel'),
        null, { timeout: ms }));
    await pages.alice.fill('#chat-input', 'On my way down');
    await pages.alice.click('#chat-send');
    await expect('bob did not see alice\'s chat message', 5_000,
      (ms) => pages.bob.waitForFunction(() => document.getElementById('chat-log').textContent.includes('On my way'),
        null, { timeout: ms }));
    await screenshot(pages.alice, 'intercom-call.png');
    await hangUp('alice');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('a rejected call, and a call cancelled while it rings, leave both pages ready', async () => {
    await ring('alice', 'bob', 'audio');
    await pages.bob.click('#reject-btn');
    await bothReady('bob rejected the call');
    assert.match(await pages.alice.textContent('#status-text'), /bob rejected the call/,
      'alice\'s status line should say that bob rejected the call');

    await ring('bob', 'alice', 'video');
    await pages.bob.click('#cancel-btn');
    await bothReady('bob cancelled the call while it rang');
    assert.match(await pages.alice.textContent('#status-text'), /Missed call from bob/,
      'alice\'s status line should say she missed a call from bob');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('the daemon restarts mid-call: media keeps flowing, both pages reconnect and call again', async (t) => {
    await connectCall('alice', 'bob', 'audio');
    await audioFlowsBothWays('before the restart');

    await stopDaemon(daemon.child);
    for (const name of Object.keys(others)) {
      await expect(`${name} did not notice that the daemon stopped`, 5_000,
        (ms) => pages[name].waitForFunction(() => document.body.dataset.conn === 'reconnecting', null, { timeout: ms }));
      assert.match(await pages[name].textContent('#status-text'), /reconnecting in/,
        `${name}'s status line should say it is reconnecting`);
    }
    // The media path is browser to browser: with the daemon gone the call goes on.
    const before = await inboundAudioBytes(pages.alice);
    await expect('alice\'s audio from bob stopped while the daemon was down', 10_000,
      (ms) => waitAudioAbove(pages.alice, before, ms));
    assert.equal(await pages.bob.evaluate(() => document.body.dataset.state), 'in-call');

    // Same port again, so that the pages' address stays valid.
    daemon = startDaemon(workDir, port);
    await daemon.port;
    const down = Date.now();
    for (const [name, other] of Object.entries(others)) {
      await expect(`${name} did not reconnect by itself and see ${other} after the daemon came back`, 20_000,
        (ms) => pages[name].waitForFunction((o) => document.body.dataset.conn === 'connected' &&
          window.intercom.peers.includes(o), other, { timeout: ms }));
    }
    t.diagnostic(`both pages back online ${((Date.now() - down) / 1000).toFixed(1)} s after the restart`);
    for (const name of Object.keys(others)) {
      assert.equal(await pages[name].evaluate(() => document.body.dataset.state), 'in-call',
        `${name} should still be in the call after the restart`);
    }

    // The hang-up goes through the new daemon; then a fresh call works end to end.
    await hangUp('alice');
    await connectCall('bob', 'alice', 'audio');
    await audioFlowsBothWays('in a call placed after the restart');
    await hangUp('bob');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('a page opened by a host name that is not localhost says why the microphone is blocked', async (t) => {
    const base = `http://${INSECURE_HOST}:${port}`;
    const page = await newPage('insecure');
    await expect(`the page did not load from ${base}/`, 10_000, (ms) => page.goto(`${base}/`, { timeout: ms }));
    assert.equal(await page.evaluate(() => window.isSecureContext), false, `${base}/ should not be a secure context`);
    await expect('the intercom page did not show the insecure-context message', 5_000,
      (ms) => page.waitForSelector('#secure-warning:not([hidden])', { timeout: ms }));
    const text = await page.textContent('#secure-warning');
    assert.match(text, /not in a secure context/, 'the message should say the page is not a secure context');
    assert.match(text, /microphone/, 'the message should say the microphone is blocked');
    // The daemon's real https port, from /api/https (restarted above: the port of the new one).
    const httpsPort = await daemon.httpsPort;
    assert.equal(await page.getAttribute('[data-testid="https-link"]', 'href'), `https://${INSECURE_HOST}:${httpsPort}/`,
      'the message should link to the https address of the same host, on the daemon\'s https port');
    assert.equal(await page.getAttribute('[data-testid="trust-link"]', 'href'), 'trust.html',
      'the message should link to the page that installs the intercom\'s CA');

    // The page still works for what needs no microphone: going online.
    await page.fill('#name-input', 'carol');
    await page.click('#connect-btn');
    await expect('the insecure page did not get online as "carol"', 10_000,
      (ms) => page.waitForFunction(() => document.body.dataset.conn === 'connected', null, { timeout: ms }));
    // Calling from it ends at once with the reason, instead of ringing someone who cannot be heard.
    await expect('carol never saw alice online', 10_000,
      (ms) => page.waitForSelector('[data-testid="call-audio-alice"]:not([disabled])', { timeout: ms }));
    await page.click('[data-testid="call-audio-alice"]');
    await expect('a call from the insecure page did not end with the insecure-context reason', 5_000,
      (ms) => page.waitForFunction(() => document.body.dataset.state === 'idle' &&
        /not in a secure context/.test(document.getElementById('status-text').textContent), null, { timeout: ms }));
    assert.equal(await pages.alice.evaluate(() => document.body.dataset.state), 'idle', 'alice was never rung');

    // The room and door pages say it too.
    for (const path of ['/room.html', '/door.html?id=gate&room=lobby&call=*']) {
      await expect(`${base}${path} did not load`, 10_000, (ms) => page.goto(`${base}${path}`, { timeout: ms }));
      await expect(`${path} did not say that it is not in a secure context`, 5_000,
        (ms) => page.waitForFunction(() => /not in a secure context/.test(document.body.innerText), null, { timeout: ms }));
    }
    await page.context().close();
    delete pages.insecure;
  });

  // A secure page in a browser without WebRTC (WebKitGTK as Debian builds it, some privacy
  // settings): every page says so at load, before anyone calls, and a call from it rings nobody.
  it('a browser without RTCPeerConnection is told so at load on every page, and its call rings nobody', async (t) => {
    const page = await newPage('nowebrtc');
    await page.context().addInitScript(() => { delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection; });
    const base = `http://127.0.0.1:${port}`;
    await expect(`the page did not load from ${base}/`, 10_000, (ms) => page.goto(`${base}/`, { timeout: ms }));
    assert.equal(await page.evaluate(() => typeof window.RTCPeerConnection), 'undefined', 'the init script removed WebRTC');
    await expect('the intercom page did not warn at load that it cannot make calls', 5_000,
      (ms) => page.waitForSelector('#secure-warning:not([hidden])', { timeout: ms }));
    const text = await page.textContent('#secure-warning');
    assert.match(text, /cannot make WebRTC calls/);
    assert.doesNotMatch(text, /secure context/, '127.0.0.1 is a secure context: not that message');

    await page.fill('#name-input', 'dave');
    await page.click('#connect-btn');
    await expect('dave never saw alice online', 10_000,
      (ms) => page.waitForSelector('[data-testid="call-audio-alice"]:not([disabled])', { timeout: ms }));
    await page.click('[data-testid="call-audio-alice"]');
    await expect('a call from the page without WebRTC did not end at once with the reason', 5_000,
      (ms) => page.waitForFunction(() => document.body.dataset.state === 'idle' &&
        /cannot make WebRTC calls/.test(document.getElementById('status-text').textContent), null, { timeout: ms }));
    assert.equal(await pages.alice.evaluate(() => document.body.dataset.state), 'idle', 'alice was never rung');

    await expect('room.html did not load', 10_000, (ms) => page.goto(`${base}/room.html`, { timeout: ms }));
    await expect('the room page did not warn at load that it cannot make calls', 5_000,
      (ms) => page.waitForFunction(() => !document.getElementById('secure-warning').hidden &&
        /cannot make WebRTC calls/.test(document.getElementById('secure-warning').textContent), null, { timeout: ms }));
    // The door station still goes online (its button still rings the house) and says it cannot call.
    await expect('door.html did not load', 10_000, (ms) => page.goto(`${base}/door.html?id=gate&room=lobby&call=*`, { timeout: ms }));
    await expect('the door page did not go online with the cannot-call notice', 10_000,
      (ms) => page.waitForFunction(() => document.body.dataset.conn === 'connected' &&
        /cannot make WebRTC calls/.test((document.querySelector('[data-testid="notice-webrtc"]') || {}).textContent || ''),
      null, { timeout: ms }));
    await page.context().close();
    delete pages.nowebrtc;
    t.diagnostic(`intercom tests ${((Date.now() - launched) / 1000).toFixed(1)} s after the browser launched`);
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });
});
