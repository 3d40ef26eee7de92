// The pages in WebKitGTK, the engine Safari is built on (issue 18, "Every phone's browser engine").
// WebKitWebDriver drives MiniBrowser over plain W3C WebDriver (webkit-lib.mjs, node's fetch,
// no npm package). Debian's WebKitGTK has no WebRTC (RTCPeerConnection is undefined), so this
// checks everything up to the media: the pages load and go online, the signaling and the call
// states, what a page says when it cannot make a WebRTC connection, and Safari's rules (media
// only in a secure context, sound only after a gesture). The other side of a call is a bare
// WebSocket peer ("bot"): it rings the WebKit page and sees exactly what the page sends back.
//
//   1. what this WebKit offers (versions, secure context, getUserMedia, RTCPeerConnection), and
//      the intercom page's warning at load that this browser cannot make calls;
//   2. the intercom page goes online: the daemon (/api/peers) and the bot see it;
//   3. the bot rings it: the ringing card; reject; a missed call; a room ring answered elsewhere;
//   3b. after a reload it goes online by itself and rings before any tap (Safari: no sound yet);
//   4. Accept without RTCPeerConnection: a clear message on the page, the caller is told;
//   5. Call from the page without RTCPeerConnection: a clear message, the callee is told;
//   5b. a Chromium intercom page (the suite's own, lib.mjs) calls the WebKit page, which accepts;
//   6. the door station: online, says it cannot make calls, "sound is blocked" until a tap,
//      the visitor's first tap on the big button rings, an incoming call and its big button end
//      with a clear message;
//   7. the room page: joins, and says it cannot connect to a member;
//   8. a host name that is not localhost (through a proxy): the insecure-context message on
//      all three pages, calling refused at once.
//
// Run (as root, in a network namespace, with an X server; run.sh runs it with the rest):
//   INTERCOMD_BIN=target/debug/intercomd unshare -n sh -c 'ip link set lo up && exec xvfb-run -a node --test webkit.test.mjs'
// Debian packages: webkit2gtk-driver (WebKitWebDriver and MiniBrowser) and xvfb; chromium and
// npm ci (playwright-core) as for the rest of the suite, for 5b.
// WEBKIT_LOG=1 echoes what the driver and MiniBrowser print. The pages see a microphone and no
// camera (webkit-lib.mjs, Session.watch: WebKitGTK's mock camera stalls the automation here).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, INSECURE_HOST, launchBrowser, startDaemon, stopDaemon } from './lib.mjs';
import { WEBKIT_ARGS, Session, hostProxy, requireWebKit, startDriver, wsPeer } from './webkit-lib.mjs';

const TOKEN = 'b0'.repeat(16);

describe('WebKitGTK (Safari\'s engine)', { timeout: 420_000 }, () => {
  let workDir;
  let daemon;
  let port;
  let url;
  let driver;
  let wk;            // the WebDriver session: one MiniBrowser window
  let bot;           // the bare WebSocket peer in the lobby
  let started;

  before(async () => {
    started = Date.now();
    assert.ok(BIN, 'set INTERCOMD_BIN to the daemon binary (e.g. target/debug/intercomd)');
    requireWebKit();
    workDir = mkdtempSync(join(tmpdir(), 'intercomd-webkit-'));
    daemon = startDaemon(workDir);
    port = await daemon.port;
    url = `http://127.0.0.1:${port}/`;
    driver = await startDriver();
    wk = await Session.create(driver);
  });

  after(async () => {
    if (bot) bot.close();
    if (wk) await wk.close();
    if (driver) await driver.stop();
    if (daemon) await stopDaemon(daemon.child);
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  const peers = async () => (await (await fetch(`${url}api/peers`)).json()).peers;

  /** Loads `path` from the daemon and hooks the page's errors (Session.watch). */
  async function open(path) {
    try {
      await wk.open(`${url}${path}`);
    } catch (e) {
      const st = await (await fetch(`${url}api/status`)).json().catch(() => ({}));
      const page = await wk.describe().catch((e2) => `(not readable: ${e2.message})`);
      throw new Error(`${e.message}\n  page now: ${page}\n  daemon: ${JSON.stringify(st.counters)}`);
    }
  }
  /** Fails with the page's uncaught errors, if any, and its console warnings for context. */
  async function noPageErrors(session = wk) {
    const errors = await session.errors();
    if (errors.length) assert.fail(`uncaught errors on the page:\n  ${errors.join('\n  ')}\nconsole:\n  ${(await session.warnings()).join('\n  ')}`);
  }

  /** The page's status line: its text, level and whether it is shown. */
  async function status() {
    return wk.exec(() => {
      const t = document.getElementById('status-text');
      const box = t.closest('.status') || t.parentElement;
      const r = t.getBoundingClientRect();
      return { text: t.textContent, level: box.dataset.level, shown: r.width > 0 && r.height > 0 };
    });
  }

  /** The bot rings the page's peer `to`; resolves once the page shows the ringing card. */
  async function botRings(to, call, extra = {}) {
    bot.send({ type: 'call-request', to, call, media: 'audio', ...extra });
    await wk.waitFor(`the WebKit page did not ring when the bot called (call ${call})`, 15_000,
      () => document.body.dataset.state === 'ringing');
  }

  /** Makes sure the page has no RTCPeerConnection, whatever this build offers (the case under test). */
  const withoutWebRTC = () => wk.exec(() => {
    const had = typeof window.RTCPeerConnection;
    delete window.RTCPeerConnection;
    delete window.webkitRTCPeerConnection;
    return { had, now: typeof window.RTCPeerConnection };
  });

  it('WebKitGTK here: versions, a secure context on 127.0.0.1 with getUserMedia, and no RTCPeerConnection', async (t) => {
    await open('?room=lobby');
    const f = await wk.exec(() => ({
      ua: navigator.userAgent,
      secure: window.isSecureContext,
      getUserMedia: typeof (navigator.mediaDevices && navigator.mediaDevices.getUserMedia),
      getDisplayMedia: typeof (navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia),
      RTCPeerConnection: typeof window.RTCPeerConnection,
      webkitRTCPeerConnection: typeof window.webkitRTCPeerConnection,
      AudioContext: typeof window.AudioContext,
      userActivation: typeof navigator.userActivation,
      permissions: typeof (navigator.permissions && navigator.permissions.query),
      wakeLock: 'wakeLock' in navigator,
      serviceWorker: 'serviceWorker' in navigator,
      Notification: typeof window.Notification,
      BroadcastChannel: typeof window.BroadcastChannel,
      EventSource: typeof window.EventSource,
    }));
    t.diagnostic(`browser: ${wk.capabilities.browserName} ${wk.capabilities.browserVersion}; ${f.ua}`);
    t.diagnostic(`features: ${JSON.stringify({ ...f, ua: undefined })}`);
    assert.equal(f.secure, true, 'http://127.0.0.1 is a secure context in WebKit too');
    assert.equal(f.getUserMedia, 'function', 'getUserMedia exists (--enable-media-stream)');
    // The microphone only: see Session.watch about the mock camera.
    const gum = await wk.execAsync(async () => {
      const s = await navigator.mediaDevices.getUserMedia({ audio: true });
      const tracks = s.getTracks().map((tr) => `${tr.kind}:${tr.label}`);
      s.getTracks().forEach((tr) => tr.stop());
      return tracks;
    });
    t.diagnostic(`getUserMedia gave ${gum.join(', ')}`);
    assert.equal(gum.length, 1, 'the mock microphone');
    if (f.RTCPeerConnection !== 'undefined') t.diagnostic('this build HAS RTCPeerConnection: the tests below remove it to check the pages without it');
    // 127.0.0.1 is secure, so the page's warning box is about WebRTC, or absent with WebRTC.
    const warning = await wk.exec(() => document.getElementById('secure-warning').textContent);
    if (f.RTCPeerConnection === 'undefined') {
      assert.equal(await wk.displayed('#secure-warning'), true, 'a browser without WebRTC is told so at load, before anyone calls');
      assert.match(warning, /cannot make WebRTC calls/);
      assert.doesNotMatch(warning, /secure context/, 'not the insecure-context message on 127.0.0.1');
    } else {
      assert.equal(await wk.displayed('#secure-warning'), false, 'no warning on 127.0.0.1 with WebRTC');
    }
    await noPageErrors();
  });

  it('the intercom page goes online: the daemon and a WebSocket peer see it', async () => {
    await wk.type('#name-input', 'safari');
    await wk.click('#connect-btn');
    await wk.waitFor('the WebKit intercom page did not get online as "safari"', 20_000,
      () => document.body.dataset.conn === 'connected' && window.intercom.id === 'safari');
    assert.ok((await peers()).some((p) => p.id === 'safari' && p.room === 'lobby'), '/api/peers lists safari in the lobby');
    bot = await wsPeer(port, { id: 'bot', room: 'lobby', token: TOKEN });
    const welcome = await bot.waitFor('the bot got no welcome', 10_000, (m) => m.type === 'welcome');
    assert.ok(welcome.peers.includes('safari'), `the bot's welcome lists safari: ${JSON.stringify(welcome.peers)}`);
    await wk.waitFor('the WebKit page did not list the bot with an enabled Call (audio) button', 15_000,
      () => { const b = document.querySelector('[data-testid="call-audio-bot"]'); return !!b && !b.disabled; });
    assert.equal(await wk.displayed('[data-testid="call-audio-bot"]'), true);
    await noPageErrors();
  });

  it('the bot rings the page: the ringing card, reject, a missed call, a room ring answered elsewhere', async () => {
    let from = bot.messages.length;
    await botRings('safari', 'r1');
    assert.equal(await wk.displayed('#incoming'), true, 'the ringing card is shown');
    assert.equal(await wk.exec(() => document.getElementById('incoming-from').textContent), 'bot');
    assert.match(await wk.exec(() => document.getElementById('incoming-kind').textContent), /is calling you \(audio\)/);
    await wk.click('#reject-btn');
    const rej = await bot.waitFor('the bot got no call-reject after Reject', 10_000, (m) => m.type === 'call-reject', from);
    assert.equal(rej.call, 'r1');
    assert.equal(rej.reason, 'declined');
    await wk.waitFor('the page did not go back to idle after Reject', 10_000, () => document.body.dataset.state === 'idle');
    assert.match((await status()).text, /Rejected the call from bot/);

    await botRings('safari', 'r2');
    bot.send({ type: 'hangup', to: 'safari', call: 'r2' });
    await wk.waitFor('the page did not say "Missed call from bot" after the bot gave up', 10_000,
      () => document.body.dataset.state === 'idle' && /Missed call from bot/.test(document.getElementById('status-text').textContent));

    await botRings('safari', 'r3', { ring: 'room' });
    assert.match(await wk.exec(() => document.getElementById('incoming-kind').textContent), /everyone/);
    bot.send({ type: 'hangup', to: 'safari', call: 'r3', reason: 'answered-elsewhere', answeredBy: 'kitchen' });
    await wk.waitFor('the page did not stop ringing and say who answered', 10_000,
      () => document.body.dataset.state === 'idle' && /kitchen answered the call from bot/.test(document.getElementById('status-text').textContent));
    from = bot.messages.length;
    await noPageErrors();
  });

  // Safari plays no sound before a gesture: an AudioContext made without one stays "suspended".
  // "Go online" is a tap, but a reload (or the app opened from the home screen) goes online by
  // itself with the remembered name, and the first ring then comes before any tap.
  const ringTone = { state: null, prompt: null };
  it('after a reload the page goes online by itself and rings (no tap yet)', async (t) => {
    await wk.reload();
    await wk.waitFor('the reloaded page did not get back online by itself as "safari"', 20_000,
      () => document.body.dataset.conn === 'connected' && window.intercom.id === 'safari');
    // Record the AudioContext the ring tone will make (call.js makes it lazily, on the first ring).
    await wk.exec(() => {
      const A = window.AudioContext;
      window.__contexts = [];
      window.AudioContext = class extends A { constructor(...a) { super(...a); window.__contexts.push(this); } };
    });
    assert.equal(await wk.exec(() => navigator.userActivation.hasBeenActive), false, 'no gesture on the reloaded page');
    const from = bot.messages.length;
    await botRings('safari', 'rt1');
    await wk.waitFor('the ring made no AudioContext', 10_000, () => window.__contexts.length > 0);
    Object.assign(ringTone, await wk.exec(() => ({
      state: window.__contexts[0].state,
      // Anything on screen that asks for a tap to hear the ring.
      prompt: /tap|sound|enable/i.test(document.getElementById('incoming').innerText + document.getElementById('status').innerText),
    })));
    t.diagnostic(`ring tone AudioContext: ${ringTone.state}; a prompt to enable sound on screen: ${ringTone.prompt}`);
    bot.send({ type: 'hangup', to: 'safari', call: 'rt1' });
    await wk.waitFor('the page did not say "Missed call from bot"', 10_000,
      () => document.body.dataset.state === 'idle' && /Missed call from bot/.test(document.getElementById('status-text').textContent));
    assert.ok(!bot.messages.slice(from).some((m) => m.type === 'call-accept'));
    await noPageErrors();
  });

  it('a ring the page cannot sound (no tap yet) says so on screen, as the door station does', () => {
    assert.ok(ringTone.state !== 'suspended' || ringTone.prompt,
      `the ring tone's AudioContext is "${ringTone.state}" (silent) and nothing on screen says to tap for sound`);
  });

  it('Accept without RTCPeerConnection: a clear message on the page, and the caller is told', async (t) => {
    t.diagnostic(`RTCPeerConnection before: ${JSON.stringify(await withoutWebRTC())}`);
    const from = bot.messages.length;
    await botRings('safari', 'a1');
    await wk.click('#accept-btn');
    const reply = await bot.waitFor('the bot heard nothing after the WebKit page accepted', 15_000,
      (m) => ['call-accept', 'call-reject', 'hangup'].includes(m.type), from);
    t.diagnostic(`the bot got: ${JSON.stringify(reply)}`);
    await wk.waitFor('the page did not end the call with a message after Accept', 15_000,
      () => document.body.dataset.state === 'idle');
    const s = await status();
    t.diagnostic(`the page says: [${s.level}] ${s.text}`);
    assert.match(s.text, /cannot make WebRTC calls/, 'the page says this browser cannot make WebRTC calls');
    assert.equal(s.level, 'error');
    assert.equal(s.shown, true, 'the message is on screen');
    assert.equal(reply.type, 'call-reject', 'the caller is told (call-reject, no call-accept first)');
    assert.equal(reply.call, 'a1');
    await noPageErrors();
  });

  it('Call from the page without RTCPeerConnection ends at once, before ringing anyone (as on an insecure page)', async () => {
    await withoutWebRTC();
    const from = bot.messages.length;
    await wk.click('[data-testid="call-audio-bot"]');
    // Whichever comes first: the bot rung, or the page back to idle saying why.
    let first = null;
    const deadline = Date.now() + 15_000;
    while (!first) {
      if (bot.messages.slice(from).some((m) => m.type === 'call-request')) first = 'rang the bot';
      else if (await wk.exec(() => document.body.dataset.state === 'idle' &&
        /WebRTC/.test(document.getElementById('status-text').textContent))) first = 'refused';
      else if (Date.now() > deadline) first = 'neither within 15 s';
      else await new Promise((r) => setTimeout(r, 100)); // polling interval: two sources to watch
    }
    if (first === 'rang the bot') {
      // Leave both sides clean for the next test.
      const req = bot.messages.slice(from).find((m) => m.type === 'call-request');
      bot.send({ type: 'call-reject', to: 'safari', call: req.call, reason: 'declined' });
      await wk.waitFor('the page did not go back to idle', 10_000, () => document.body.dataset.state === 'idle');
    }
    assert.equal(first, 'refused', 'the page should refuse at once instead of ringing someone it cannot talk to');
  });

  // The real other side: a Chromium intercom page (lib.mjs, as in the rest of the suite) calls the
  // WebKit page, which accepts and cannot connect. What does the caller read?
  const chromiumCaller = { text: null };
  it('a Chromium page rings the WebKit page; WebKit accepts and cannot connect; both pages end the call', async (t) => {
    const browser = await launchBrowser();
    try {
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${url}?room=lobby`, { timeout: 30_000 });
      await page.fill('#name-input', 'alice');
      await page.click('#connect-btn');
      await page.waitForSelector('[data-testid="call-audio-safari"]:not([disabled])', { timeout: 15_000 });
      await withoutWebRTC();
      await page.click('[data-testid="call-audio-safari"]');
      await wk.waitFor('the WebKit page did not ring when the Chromium page called', 15_000,
        () => document.body.dataset.state === 'ringing' && document.getElementById('incoming-from').textContent === 'alice');
      await wk.click('#accept-btn');
      await wk.waitFor('the WebKit page did not end the call with the reason', 15_000,
        () => document.body.dataset.state === 'idle' && /cannot make WebRTC calls/.test(document.getElementById('status-text').textContent));
      await page.waitForFunction(() => document.body.dataset.state === 'idle', null, { timeout: 15_000 });
      chromiumCaller.text = await page.textContent('#status-text');
      t.diagnostic(`the Chromium caller reads: ${chromiumCaller.text}`);
    } finally {
      await browser.close();
    }
    await noPageErrors();
  });

  it('the Chromium caller is told that the other browser cannot make calls, not that it rejected', () => {
    assert.ok(chromiumCaller.text, 'the test above did not get this far');
    assert.doesNotMatch(chromiumCaller.text, /rejected/, `the caller reads "${chromiumCaller.text}"`);
  });

  it('the door station: online, "sound is blocked" until a tap, calls end with a clear message', async (t) => {
    await open('door.html?id=door&room=lobby&call=*');
    await wk.waitFor('the door page did not become ready (online, big button enabled)', 20_000,
      () => document.body.dataset.state === 'ready' && document.body.dataset.conn === 'connected' &&
        !document.getElementById('ring-btn').disabled);
    assert.ok((await peers()).some((p) => p.id === 'door' && p.room === 'lobby'), '/api/peers lists the door in the lobby');
    const notices = await wk.exec(() => Array.from(document.querySelectorAll('#notices .notice'), (n) => `${n.dataset.testid}: ${n.textContent}`));
    t.diagnostic(`door notices on load: ${JSON.stringify(notices)}`);
    const hasWebRTC = await wk.exec(() => typeof window.RTCPeerConnection === 'function');
    assert.equal(notices.some((n) => /^notice-webrtc: .*cannot make WebRTC calls/.test(n)), !hasWebRTC,
      'the door station says at load whether this browser can make calls');
    // Safari's autoplay rule: no sound before a gesture. The page must say so, and one tap must lift it.
    await wk.waitFor('the door did not show that sound is blocked until a tap', 10_000,
      () => !!document.querySelector('[data-testid="notice-sound"]'));
    assert.equal(await wk.displayed('[data-testid="notice-sound"]'), true, 'the sound notice is on screen');
    // The visitor's first tap is on the big button, and it must ring: the notice it lifts must
    // not move the button from under the finger between the press and the release.
    let from = bot.messages.length;
    await wk.click('[data-testid="ring"]');
    const first = await bot.waitFor('the first tap on the big button (with the sound notice up) rang nobody', 15_000,
      (m) => m.type === 'call-request', from);
    await wk.waitFor('one tap did not lift the sound notice', 10_000, () => !document.querySelector('[data-testid="notice-sound"]'));
    bot.send({ type: 'call-reject', to: 'door', call: first.call, reason: 'declined' });
    await wk.waitFor('the door did not go back to ready after the bot declined', 15_000,
      () => document.body.dataset.state === 'ready' && !!document.body.dataset.result);

    // A panel calls the door: it answers by itself, and cannot.
    await withoutWebRTC();
    from = bot.messages.length;
    bot.send({ type: 'call-request', to: 'door', call: 'd1', media: 'video' });
    const reply = await bot.waitFor('the bot heard nothing after calling the door', 15_000,
      (m) => ['call-accept', 'call-reject', 'hangup'].includes(m.type), from);
    t.diagnostic(`calling the door, the bot got: ${JSON.stringify(reply)}`);
    await wk.waitFor('the door did not go back to ready with a result', 15_000,
      () => document.body.dataset.state === 'ready' && !!document.body.dataset.result);
    let s = await status();
    const result = await wk.exec(() => document.getElementById('result').textContent);
    t.diagnostic(`the door shows "${result}" and says: [${s.level}] ${s.text}`);
    assert.match(s.text, /cannot make WebRTC calls/);
    assert.equal(reply.type, 'call-reject');

    // The big button rings the room; the bot accepts; the door cannot connect.
    from = bot.messages.length;
    await wk.click('[data-testid="ring"]');
    const req = await bot.waitFor('the door\'s big button did not ring the bot', 15_000, (m) => m.type === 'call-request', from);
    assert.equal(req.ring, 'room');
    bot.send({ type: 'call-accept', to: 'door', call: req.call, media: req.media });
    const bye = await bot.waitFor('the bot was not told after accepting the door', 15_000, (m) => m.type === 'hangup', from);
    t.diagnostic(`after accepting the door's ring the bot got: ${JSON.stringify(bye)}`);
    await wk.waitFor('the door did not go back to ready with a result', 15_000,
      () => document.body.dataset.state === 'ready' && document.body.dataset.result === 'failed');
    s = await status();
    assert.match(s.text, /cannot make WebRTC calls/);
    await noPageErrors();
  });

  it('the room page: joins (the daemon sees it), and says so when it cannot connect to a member', async (t) => {
    await open('room.html?room=webkitroom');
    await wk.type('#name-input', 'safari');
    await wk.click('#join-btn');
    await wk.waitFor('the room page did not join', 20_000,
      () => document.body.dataset.state === 'in-room' && document.body.dataset.conn === 'connected');
    const room = await (await fetch(`${url}api/rooms/webkitroom`)).json();
    assert.deepEqual(room.peers, ['safari'], 'the daemon has safari in the room');
    t.diagnostic(`alone in the room: ${(await status()).text}`);
    await withoutWebRTC();
    // A member that joins after us offers (the newcomer offers to everyone present).
    const member = await wsPeer(port, { id: 'member', room: 'webkitroom', token: 'c1'.repeat(16) });
    try {
      await member.waitFor('no welcome', 10_000, (m) => m.type === 'welcome');
      member.send({ type: 'room-offer', to: 'safari', pc: 'm1', sdp: 'v=0\r\n' });
      await wk.waitFor('the room page did not say it cannot connect to the member', 15_000,
        () => /cannot make WebRTC calls/.test(document.getElementById('status-text').textContent));
      const s = await status();
      t.diagnostic(`the room page says: [${s.level}] ${s.text}`);
      assert.equal(s.level, 'error');
    } finally {
      member.close();
    }
    await noPageErrors();
  });

  it('the room page, joining a room with someone in it, says it cannot connect to them', async (t) => {
    const member = await wsPeer(port, { id: 'early', room: 'webkitroom2', token: 'c2'.repeat(16) });
    try {
      await member.waitFor('no welcome', 10_000, (m) => m.type === 'welcome');
      await open('room.html?room=webkitroom2');
      await withoutWebRTC();
      await wk.type('#name-input', 'safari');
      await wk.click('#join-btn');
      await wk.waitFor('the room page did not join', 20_000,
        () => document.body.dataset.state === 'in-room' && document.body.dataset.conn === 'connected');
      const s = await status();
      const tiles = await wk.exec(() => Array.from(document.querySelectorAll('#tiles > *'), (el) => `${el.dataset.peer || el.dataset.id || '?'}=${el.dataset.state}`));
      t.diagnostic(`the room page says: [${s.level}] ${s.text}; tiles: ${JSON.stringify(tiles)}`);
      assert.match(s.text, /cannot make WebRTC calls/, 'the page should say why it will never connect to "early"');
    } finally {
      member.close();
    }
  });

  it('a host name that is not localhost: the insecure-context message on all three pages', async (t) => {
    const proxy = await hostProxy(INSECURE_HOST);
    const httpsPort = await daemon.httpsPort;
    const base = `http://${INSECURE_HOST}:${port}`;
    // Another MiniBrowser, whose requests go through the proxy. WebKitWebDriver runs one
    // session at a time ("Maximum number of active sessions"): the first one ends here.
    await wk.close();
    wk = null;
    const ins = await Session.create(driver, { args: [...WEBKIT_ARGS, `--proxy=${proxy.url}`] });
    try {
      await ins.open(`${base}/`);
      assert.equal(await ins.exec(() => window.isSecureContext), false, `${base}/ is not a secure context`);
      await ins.waitFor('the intercom page did not show the insecure-context message', 10_000,
        () => !document.getElementById('secure-warning').hidden);
      const text = await ins.exec(() => document.getElementById('secure-warning').textContent);
      assert.match(text, /not in a secure context/);
      assert.match(text, /microphone/);
      assert.equal(await ins.displayed('#secure-warning'), true, 'the message is on screen');
      assert.equal(await ins.exec(() => document.querySelector('[data-testid="https-link"]').getAttribute('href')),
        `https://${INSECURE_HOST}:${httpsPort}/`, 'it links to the https address on the daemon\'s https port');
      // Online without a microphone, through the proxy; calling ends at once with the reason.
      await ins.type('#name-input', 'carol');
      await ins.click('#connect-btn');
      await ins.waitFor('the insecure page did not get online as "carol"', 20_000,
        () => document.body.dataset.conn === 'connected');
      await ins.waitFor('carol never saw the bot online', 15_000,
        () => { const b = document.querySelector('[data-testid="call-audio-bot"]'); return !!b && !b.disabled; });
      const from = bot.messages.length;
      await ins.click('[data-testid="call-audio-bot"]');
      await ins.waitFor('calling from the insecure page did not end with the insecure-context reason', 10_000,
        () => document.body.dataset.state === 'idle' &&
          /not in a secure context/.test(document.getElementById('status-text').textContent));
      // The daemon logs every ring it passes on: none from carol.
      const events = (await (await fetch(`${url}api/events`)).json()).events;
      assert.ok(!events.some((e) => e.event === 'ring' && e.from === 'carol'), 'carol rang nobody');
      assert.ok(!bot.messages.slice(from).some((m) => m.type === 'call-request'), 'the bot was not rung');
      for (const path of ['/room.html', '/door.html?id=gate&room=lobby&call=*']) {
        await ins.open(`${base}${path}`);
        await ins.waitFor(`${path} did not say that it is not in a secure context`, 10_000,
          () => /not in a secure context/.test(document.body.innerText));
      }
      t.diagnostic(`through the proxy: ${proxy.seen.length} requests, the signaling socket as ${proxy.seen.find((l) => /\/ws\?/.test(l))}`);
      await noPageErrors(ins);
    } finally {
      await ins.close();
      await proxy.close();
    }
    t.diagnostic(`WebKit tests ${((Date.now() - started) / 1000).toFixed(1)} s in all`);
  });
});
