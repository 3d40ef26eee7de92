// The intercom page in Firefox (Debian's firefox-esr over WebDriver BiDi, see firefox.mjs), and
// mixed with Chromium, through the page's own buttons:
//   1. two Firefox pages go online and see each other;
//   2. an audio call between them: audio both ways, chat both ways, a hang-up;
//   3. a rejected call, and a call cancelled while it rings;
//   4. mixed calls: Chromium calls Firefox, then Firefox calls Chromium, audio and chat both ways;
//   5. the page opened by a host name that is not localhost: the insecure-context message;
//   6. a room of three (two Firefox pages and a Chromium one): everyone connected to everyone,
//      audio arriving from each;
//   7. a Firefox door station answers a Chromium panel by itself, and a Chromium door station a
//      Firefox panel: audio both ways, the panel hangs up;
//   8. over https and wss, in a Firefox whose profile trusts the generated CA (Firefox keeps its
//      own certificate store): two pages online and an audio call;
//   9. the unmodified PeerJS client in Firefox: a data connection with 20 messages each way in
//      order, and a media call with audio both ways, Firefox to Firefox and Chromium to Firefox.
//
// Run through ./run.sh DAEMON_BINARY (it installs firefox-esr and gives the network namespace
// the default route Firefox gathers candidates on).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BIN, INSECURE_HOST, LOCAL_HOST, startDaemon, stopDaemon, makeExpect, waitAudioAbove, launchBrowser, openPage, poll,
} from './lib.mjs';
import { hasDefaultRoute, launchFirefox, openFirefoxPage } from './firefox.mjs';
import { audioBytes, peerjsWww } from './peerjs-page.mjs';

describe('intercom page in Firefox, and Firefox with Chromium', { timeout: 240_000 }, () => {
  let workDir;
  let daemon;
  let url;
  let firefox;
  let chromium;
  const logs = [];
  const pages = {};
  const expect = makeExpect(pages, logs);
  const pageErrors = () => logs.filter((l) => l.includes('PAGE ERROR'));

  before(async () => {
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (or use tests/browser/run.sh DAEMON_BINARY)');
    assert.ok(hasDefaultRoute(), 'Firefox gathers ICE candidates only on the default route\'s interface: ' +
      'run through run.sh, which gives the network namespace a veth pair and a default route');
    workDir = mkdtempSync(join(tmpdir(), 'intercomd-firefox-test-'));
    daemon = startDaemon(workDir);
    url = `http://127.0.0.1:${await daemon.port}/`;
    firefox = await launchFirefox();
    chromium = await launchBrowser();
  });

  after(async () => {
    if (firefox) await firefox.close();
    if (chromium) await chromium.close();
    if (daemon) await stopDaemon(daemon.child);
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  /** `name` online on the intercom page in `engine`. */
  async function online(engine, name) {
    const page = engine === 'firefox'
      ? await openFirefoxPage(firefox, name, pages, logs)
      : await openPage(chromium, name, pages, logs, { viewport: { width: 1024, height: 700 } });
    await expect(`${name} (${engine}): the page did not load from ${url}`, 20_000, (ms) => page.goto(url, { timeout: ms }));
    assert.equal(await page.isVisible('#secure-warning'), false, `${name}: a page on 127.0.0.1 is a secure context`);
    await page.fill('#name-input', name);
    await page.click('#connect-btn');
    await expect(`${name} (${engine}) did not get online`, 15_000,
      (ms) => page.waitForFunction((n) => document.body.dataset.conn === 'connected' && window.intercom.id === n,
        name, { timeout: ms }));
    return page;
  }

  /** `name` idle, with no call, and its Call (audio) button for `other` enabled. */
  async function ready(name, other, after) {
    await expect(`${name}'s page was not back to "idle" after ${after}`, 15_000,
      (ms) => pages[name].waitForFunction(() => document.body.dataset.state === 'idle' && window.intercom.pc === null,
        null, { timeout: ms }));
    await expect(`${name}'s Call button for ${other} was not enabled after ${after}`, 15_000,
      (ms) => pages[name].waitForSelector(`[data-testid="call-audio-${other}"]:not([disabled])`, { timeout: ms }));
  }

  async function ring(caller, callee) {
    await pages[caller].click(`[data-testid="call-audio-${callee}"]`);
    await expect(`${caller}'s page did not go to "calling"`, 10_000,
      (ms) => pages[caller].waitForFunction(() => document.body.dataset.state === 'calling', null, { timeout: ms }));
    await expect(`${callee}'s page did not ring after ${caller} called`, 15_000,
      (ms) => pages[callee].waitForFunction(() => document.body.dataset.state === 'ringing', null, { timeout: ms }));
    assert.equal((await pages[callee].textContent('#incoming-from')).trim(), caller);
  }

  /** A whole audio call: ring, accept, ICE connected, audio and chat both ways, `caller` hangs up. */
  async function audioCall(caller, callee) {
    await ring(caller, callee);
    await pages[callee].click('#accept-btn');
    for (const name of [caller, callee]) {
      await expect(`${name}'s ICE connection did not reach connected`, 20_000,
        (ms) => pages[name].waitForFunction(() => document.body.dataset.state === 'in-call' &&
          ['connected', 'completed'].includes(window.intercom.pc && window.intercom.pc.iceConnectionState),
        null, { timeout: ms }));
    }
    for (const name of [caller, callee]) {
      const first = await expect(`${name} received no audio`, 15_000, (ms) => waitAudioAbove(pages[name], 0, ms));
      await expect(`${name}'s received audio did not grow beyond ${first} bytes`, 15_000,
        (ms) => waitAudioAbove(pages[name], first, ms));
      await expect(`${name}'s chat (data channel) did not open`, 15_000,
        (ms) => pages[name].waitForFunction(() => window.intercom.dc && window.intercom.dc.readyState === 'open' &&
          !document.getElementById('chat-send').disabled, null, { timeout: ms }));
    }
    for (const [from, to] of [[caller, callee], [callee, caller]]) {
      const text = `hello ${to}, from ${from}`;
      await pages[from].fill('#chat-input', text);
      await pages[from].click('#chat-send');
      await expect(`${to} did not see ${from}'s chat message`, 10_000,
        (ms) => pages[to].waitForFunction((t) => document.getElementById('chat-log').textContent.includes(t), text,
          { timeout: ms }));
    }
    await pages[caller].click('#hangup-btn');
    await ready(caller, callee, `${caller} hung up`);
    await ready(callee, caller, `${caller} hung up`);
    assert.match(await pages[callee].textContent('#status-text'), new RegExp(`${caller} hung up`));
  }

  it('two Firefox pages go online and see each other', async () => {
    await online('firefox', 'fox');
    await online('firefox', 'fern');
    await ready('fox', 'fern', 'going online');
    await ready('fern', 'fox', 'going online');
  });

  it('an audio call between two Firefox pages: audio and chat both ways, a hang-up', async () => {
    await audioCall('fox', 'fern');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('a rejected call, and a call cancelled while it rings', async () => {
    await ring('fern', 'fox');
    await pages.fox.click('#reject-btn');
    await ready('fern', 'fox', 'fox rejected the call');
    await ready('fox', 'fern', 'fox rejected the call');
    assert.match(await pages.fern.textContent('#status-text'), /fox rejected the call/);
    await ring('fox', 'fern');
    await pages.fox.click('#cancel-btn');
    await ready('fern', 'fox', 'fox cancelled the call');
    assert.match(await pages.fern.textContent('#status-text'), /Missed call from fox/);
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('Chromium calls Firefox, and Firefox calls Chromium', async () => {
    await online('chromium', 'chrome');
    await ready('chrome', 'fox', 'going online');
    await ready('fox', 'chrome', 'chrome went online');
    await audioCall('chrome', 'fox');
    await audioCall('fox', 'chrome');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  /** `name` in the room `room` of the room page, in `engine`. */
  async function inRoom(engine, name, room) {
    const page = engine === 'firefox'
      ? await openFirefoxPage(firefox, name, pages, logs)
      : await openPage(chromium, name, pages, logs, { viewport: { width: 1024, height: 700 } });
    await expect(`${name} (${engine}): the room page did not load`, 20_000,
      (ms) => page.goto(`${url}room.html?room=${room}`, { timeout: ms }));
    await page.fill('#name-input', name);
    await page.click('#join-btn');
    await expect(`${name} (${engine}) did not get into room ${room}`, 15_000,
      (ms) => page.waitForFunction((n) => document.body.dataset.state === 'in-room' && window.room.id === n, name,
        { timeout: ms }));
    return page;
  }

  /** Inbound audio bytes on `name`'s room connection with `other` grow. */
  async function roomAudioFrom(name, other) {
    const bytes = () => pages[name].evaluate(async (o) => {
      const pc = window.room && window.room.peers.get(o);
      if (!pc) return -1;
      let sum = 0;
      (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') sum += r.bytesReceived || 0; });
      return sum;
    }, other);
    const says = (b) => `${name}'s inbound audio bytes from ${other} stayed at ${b}`;
    const first = await expect(`${name} received no audio from ${other}`, 15_000, (ms) => poll(bytes, (b) => b > 0, ms, says));
    await expect(`${name}'s audio from ${other} did not grow`, 15_000, (ms) => poll(bytes, (b) => b > first, ms, says));
  }

  it('a room of three, two in Firefox and one in Chromium: everyone connected to everyone, audio from each', async () => {
    const members = [['firefox', 'rf1'], ['chromium', 'rc'], ['firefox', 'rf2']];
    for (const [engine, name] of members) await inRoom(engine, name, 'mixed');
    for (const [, name] of members) {
      for (const [, other] of members) {
        if (other === name) continue;
        await expect(`${name}'s connection with ${other} did not reach "connected"`, 20_000,
          (ms) => pages[name].waitForFunction((o) => {
            const pc = window.room.peers.get(o);
            return !!pc && pc.connectionState === 'connected';
          }, other, { timeout: ms }));
        await roomAudioFrom(name, other);
      }
    }
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  /** A door station `door` (in `doorEngine`) answers the panel `panel` (in `panelEngine`) by itself. */
  async function doorAnswers(doorEngine, door, panelEngine, panel, room) {
    const doorPage = doorEngine === 'firefox'
      ? await openFirefoxPage(firefox, door, pages, logs, { viewport: { width: 800, height: 480 } })
      : await openPage(chromium, door, pages, logs, { viewport: { width: 800, height: 480 } });
    await expect(`${door} (${doorEngine}): door.html did not load`, 20_000,
      (ms) => doorPage.goto(`${url}door.html?id=${door}&room=${room}&call=*`, { timeout: ms }));
    await expect(`${door} did not become ready`, 15_000, (ms) => doorPage.waitForFunction(
      () => document.body.dataset.state === 'ready', null, { timeout: ms }));
    const panelPage = panelEngine === 'firefox'
      ? await openFirefoxPage(firefox, panel, pages, logs)
      : await openPage(chromium, panel, pages, logs, { viewport: { width: 1024, height: 700 } });
    await expect(`${panel}: the intercom page did not load`, 20_000,
      (ms) => panelPage.goto(`${url}?room=${room}`, { timeout: ms }));
    await panelPage.fill('#name-input', panel);
    await panelPage.click('#connect-btn');
    await expect(`${panel} never saw ${door} online`, 15_000,
      (ms) => panelPage.waitForSelector(`[data-testid="call-video-${door}"]:not([disabled])`, { timeout: ms }));
    await panelPage.click(`[data-testid="call-video-${door}"]`);
    await expect(`${door} (${doorEngine}) did not answer ${panel} by itself`, 15_000,
      (ms) => doorPage.waitForFunction(() => document.body.dataset.state === 'in-call' && window.door.pc, null, { timeout: ms }));
    for (const [name, page, pc] of [[door, doorPage, 'door'], [panel, panelPage, 'intercom']]) {
      await expect(`${name}'s ICE connection did not reach connected`, 20_000,
        (ms) => page.waitForFunction((w) => ['connected', 'completed'].includes(window[w].pc && window[w].pc.iceConnectionState),
          pc, { timeout: ms }));
    }
    const first = await expect(`${panel} received no audio from ${door}`, 15_000, (ms) => waitAudioAbove(panelPage, 0, ms));
    await expect(`${panel}'s audio from ${door} did not grow`, 15_000, (ms) => waitAudioAbove(panelPage, first, ms));
    const doorBytes = () => doorPage.evaluate(async () => {
      let sum = 0;
      (await window.door.pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') sum += r.bytesReceived || 0; });
      return sum;
    });
    const says = (b) => `${door}'s inbound audio bytes stayed at ${b}`;
    const heard = await expect(`${door} received no audio from ${panel}`, 15_000, (ms) => poll(doorBytes, (b) => b > 0, ms, says));
    await expect(`${door}'s audio from ${panel} did not grow`, 15_000, (ms) => poll(doorBytes, (b) => b > heard, ms, says));
    await panelPage.click('#hangup-btn');
    await expect(`${door} did not return to "ready" after ${panel} hung up`, 15_000,
      (ms) => doorPage.waitForFunction(() => document.body.dataset.state === 'ready' && window.door.pc === null, null,
        { timeout: ms }));
  }

  it('a Firefox door station answers a Chromium panel by itself, and a Chromium door a Firefox panel', async () => {
    await doorAnswers('firefox', 'ffdoor', 'chromium', 'crpanel', 'porch1');
    await doorAnswers('chromium', 'crdoor', 'firefox', 'ffpanel', 'porch2');
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });

  it('over https and wss, with the generated CA trusted in Firefox\'s own store: online and an audio call', async () => {
    const secure = await launchFirefox({ trustCa: join(workDir, 'state', 'ca.crt') });
    try {
      const origin = `https://${LOCAL_HOST}:${await daemon.httpsPort}`;
      for (const name of ['sfox', 'sfern']) {
        const page = await openFirefoxPage(secure, name, pages, logs);
        await expect(`${name}: the https page did not load (is the CA trusted?)`, 20_000,
          (ms) => page.goto(`${origin}/`, { timeout: ms }));
        assert.equal(await page.evaluate(() => window.isSecureContext), true);
        await page.fill('#name-input', name);
        await page.click('#connect-btn');
        await expect(`${name} did not get online over wss`, 15_000,
          (ms) => page.waitForFunction((n) => document.body.dataset.conn === 'connected' && window.intercom.id === n,
            name, { timeout: ms }));
      }
      await ready('sfox', 'sfern', 'going online over wss');
      await audioCall('sfox', 'sfern');
      // The daemon saw both over TLS.
      const status = await (await fetch(`${url}api/status`)).json();
      for (const name of ['sfox', 'sfern']) {
        assert.equal(status.peers.find((peer) => peer.id === name)?.transport, 'wss', `${name} is connected over wss`);
      }
      assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
    } finally {
      await secure.close();
    }
  });

  it('the PeerJS client in Firefox: a data connection and media calls, with Firefox and with Chromium', async () => {
    // A daemon of its own, serving the client and its glue page from a --www folder.
    const pjDir = mkdtempSync(join(tmpdir(), 'intercomd-firefox-peerjs-'));
    const pjDaemon = startDaemon(pjDir, 0, ['--www', peerjsWww(pjDir)]);
    try {
      const app = `http://127.0.0.1:${await pjDaemon.port}/app.html`;
      const peers = [['firefox', 'pjfox'], ['firefox', 'pjfern'], ['chromium', 'pjchrome']];
      for (const [engine, name] of peers) {
        const page = engine === 'firefox' ? await openFirefoxPage(firefox, name, pages, logs)
          : await openPage(chromium, name, pages, logs);
        await expect(`${name}: ${app} did not load`, 20_000, (ms) => page.goto(app, { timeout: ms }));
        await page.evaluate((id) => window.pj.start(id), name);
        await expect(`${name}'s Peer did not open`, 15_000,
          (ms) => page.waitForFunction((id) => window.pj.id === id, name, { timeout: ms }));
      }
      // Data, Firefox to Firefox: 20 numbered messages each way, each once, in order.
      const conn = await pages.pjfox.evaluate(() => window.pj.track(window.pj.peer.connect('pjfern', { reliable: true }), 'out').id);
      for (const name of ['pjfox', 'pjfern']) {
        await expect(`${name}'s end of the data connection did not open`, 15_000, (ms) => pages[name].waitForFunction(
          (c) => window.pj.conns.some((r) => r.id === c && r.open), conn, { timeout: ms }));
      }
      const N = 20;
      for (const name of ['pjfox', 'pjfern']) {
        await pages[name].evaluate(({ c, t, k }) => {
          const rec = window.pj.conns.find((r) => r.id === c);
          for (let i = 0; i < k; i++) rec.conn.send({ from: t, n: i });
        }, { c: conn, t: name, k: N });
      }
      for (const [name, other] of [['pjfox', 'pjfern'], ['pjfern', 'pjfox']]) {
        const got = () => pages[name].evaluate((c) => window.pj.conns.find((r) => r.id === c).received, conn);
        await expect(`${name} did not receive ${other}'s ${N} messages`, 15_000,
          (ms) => poll(got, (r) => r.length >= N, ms, (r) => `${name} has ${r.length}`));
        assert.deepEqual(await got(), Array.from({ length: N }, (_, n) => ({ from: other, n })), `${name}: in order, once each`);
      }
      // Media: Firefox calls Firefox, then Chromium calls Firefox; audio both ways each time.
      for (const [caller, callee] of [['pjfern', 'pjfox'], ['pjchrome', 'pjfox']]) {
        const call = await pages[caller].evaluate(async (to) => {
          const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
          return window.pj.track(window.pj.peer.call(to, stream), 'out').id;
        }, callee);
        await expect(`${callee}'s Peer did not fire "call" from ${caller}`, 15_000, (ms) => pages[callee].waitForFunction(
          (c) => window.pj.conns.some((r) => r.id === c && r.how === 'in'), call, { timeout: ms }));
        await pages[callee].evaluate(async (c) => {
          const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
          window.pj.conns.find((r) => r.id === c).conn.answer(stream);
        }, call);
        for (const name of [caller, callee]) {
          const says = (b) => `${name}'s inbound audio bytes on the PeerJS call stayed at ${b}`;
          const first = await expect(`${name} received no audio on the PeerJS call`, 15_000,
            (ms) => poll(() => audioBytes(pages[name], call), (b) => b > 0, ms, says));
          await expect(`${name}'s audio on the PeerJS call did not grow`, 15_000,
            (ms) => poll(() => audioBytes(pages[name], call), (b) => b > first, ms, says));
        }
      }
      assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
    } finally {
      await stopDaemon(pjDaemon.child);
      rmSync(pjDir, { recursive: true, force: true });
    }
  });

  it('opened by a host name that is not localhost, the page says why the microphone is blocked', async () => {
    const page = await openFirefoxPage(firefox, 'insecure', pages, logs);
    const insecure = url.replace('127.0.0.1', INSECURE_HOST);
    await expect(`the page did not load from ${insecure}`, 20_000, (ms) => page.goto(insecure, { timeout: ms }));
    await expect('Firefox showed no insecure-context warning', 10_000,
      (ms) => page.waitForSelector('#secure-warning:not([hidden])', { timeout: ms }));
    assert.match(await page.textContent('#secure-warning'), /not in a secure context/);
    assert.equal(await page.evaluate(() => window.isSecureContext), false);
    assert.deepEqual(pageErrors(), [], 'uncaught errors on the pages');
  });
});
